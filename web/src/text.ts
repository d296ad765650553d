// Small pure helpers for display.
import { parseAddress } from '../../src/protocol/address.js';
import type { Conversation, Message } from './types';
import { kindOf } from './types';

/** The text a content/reply message carries (the fallback `message` otherwise). */
export function textOf(m: Pick<Message, 'rich' | 'message'>): string {
  const k = kindOf(m);
  if ((k === 'content' || k === 'reply' || k === 'edit') && typeof m.rich?.text === 'string') return m.rich.text;
  return m.message;
}

export function localPart(address: string): string {
  const i = address.lastIndexOf('@');
  return i > 0 ? address.slice(0, i) : address;
}

export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1);
}

/** The conversation's name: its title, or the other participants. */
export function conversationName(c: Pick<Conversation, 'title' | 'participants'>, me: string): string {
  if (c.title) return c.title;
  const others = c.participants.filter((p) => p !== me);
  if (others.length === 0) return 'Note to self';
  return others.join(', ');
}

/** One line for the conversation list. */
export function preview(m: Message | null, me: string): string {
  if (!m) return 'No messages yet';
  if (m.deleted) return 'Message deleted';
  const k = kindOf(m);
  const who = m.from === me ? 'You' : localPart(m.from);
  if (k === 'property' && m.rich?.property) {
    return m.rich.property.value ? `${who} named the conversation “${m.rich.property.value}”` : `${who} removed the conversation name`;
  }
  if (k === 'reaction' && m.rich?.reaction) return `${who} ${m.rich.reaction.remove ? 'withdrew' : 'reacted'} ${m.rich.reaction.emoji}`;
  let t = k === 'content' || k === 'reply' ? textOf(m) : m.message;
  if (!t.trim() && m.rich?.attachments?.length) t = `📎 ${m.rich.attachments.map((a) => a.name).join(', ')}`;
  t = t.replace(/\s+/g, ' ').trim();
  return m.from === me ? `You: ${t}` : t;
}

export function formatTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  if (sameDay) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const days = (now.getTime() - d.getTime()) / 86_400_000;
  if (days < 6) return d.toLocaleDateString([], { weekday: 'short' });
  return d.toLocaleDateString([], { day: 'numeric', month: 'short' });
}

export function formatSize(n: number): string {
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${Math.round(n / 1024)} KB` : `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/**
 * Parses the "To" field: addresses separated by commas, semicolons, spaces or new lines. Returns
 * the lower-cased addresses, or the first problem in words.
 */
export function parseRecipients(input: string, me: string): { ok: true; addresses: string[] } | { ok: false; error: string } {
  const parts = input
    .split(/[\s,;]+/)
    .map((s) => s.trim())
    .filter(Boolean);
  if (parts.length === 0) return { ok: false, error: 'Enter at least one address, like bob@example.org.' };
  const out: string[] = [];
  for (const p of parts) {
    if (!p.includes('@')) return { ok: false, error: `“${p}” is not an address: addresses look like name@provider.example.` };
    const r = parseAddress(p);
    if (!r.ok) return { ok: false, error: `Not a valid address: ${r.reason}.` };
    if (r.address.full === me) continue;
    if (!out.includes(r.address.full)) out.push(r.address.full);
  }
  if (out.length === 0) return { ok: false, error: 'Add someone other than yourself.' };
  return { ok: true, addresses: out };
}

/** A stable hue for an address's avatar. */
export function hueOf(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
  return h % 360;
}

export function initials(name: string): string {
  const base = name.includes('@') ? localPart(name) : name;
  const words = base.split(/[\s._-]+/).filter(Boolean);
  const s = words.length >= 2 ? words[0]![0]! + words[1]![0]! : base.slice(0, 2);
  return s.toUpperCase();
}
