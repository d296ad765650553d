import type { JSX } from 'preact';
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { Chat } from '../store';
import { conversationName, localPart, textOf } from '../text';
import { kindOf, type Message } from '../types';
import { Avatar, Icon } from './common';
import { Composer } from './Composer';
import { ConfirmDialog, RenameDialog } from './Dialogs';
import { MessageItem, PendingItem } from './Message';

function dayOf(iso: string): string {
  const d = new Date(iso);
  const today = new Date();
  const yesterday = new Date(Date.now() - 86_400_000);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return d.toLocaleDateString([], { weekday: 'long', day: 'numeric', month: 'long' });
}

export function ConversationView({ chat, id }: { chat: Chat; id: string }) {
  const c = chat.conversations.get(id);
  const v = chat.views.get(id);
  const [replyTo, setReplyTo] = useState<Message | null>(null);
  const [editing, setEditing] = useState<Message | null>(null);
  const [deleting, setDeleting] = useState<Message | null>(null);
  const [renaming, setRenaming] = useState(false);
  const listRef = useRef<HTMLDivElement>(null);
  const innerRef = useRef<HTMLOListElement>(null);
  const composerRef = useRef<HTMLTextAreaElement>(null);
  const stick = useRef(true);
  const firstSeq = useRef<number | null>(null);
  const snapshot = useRef<{ height: number; top: number } | null>(null);

  const items = v?.items ?? [];
  const pending = v?.pending ?? [];

  // Before the DOM changes: where are we? (Read during render; used by the layout effect below.)
  const el = listRef.current;
  snapshot.current = el ? { height: el.scrollHeight, top: el.scrollTop } : null;

  useLayoutEffect(() => {
    const list = listRef.current;
    if (!list) return;
    const first = items[0]?.seq ?? null;
    const prepended = firstSeq.current !== null && first !== null && first < firstSeq.current;
    firstSeq.current = first;
    if (prepended && snapshot.current) {
      // Older messages were added above: keep what the reader was looking at in place.
      list.scrollTop = list.scrollHeight - snapshot.current.height + snapshot.current.top;
    } else if (stick.current) {
      list.scrollTop = list.scrollHeight;
    }
    // Too few messages to scroll: there is nothing to scroll up with, so load older ones now.
    if (v?.loaded && v.hasMore && !v.loadingOlder && list.scrollHeight <= list.clientHeight) void chat.loadOlder(id);
  });

  // Images load after they are laid out: stay at the bottom if we were there.
  useEffect(() => {
    const inner = innerRef.current;
    if (!inner || typeof ResizeObserver === 'undefined') return;
    const ro = new ResizeObserver(() => {
      const list = listRef.current;
      if (list && stick.current) list.scrollTop = list.scrollHeight;
    });
    ro.observe(inner);
    return () => ro.disconnect();
  }, [v?.loaded]);

  const onScroll = () => {
    const list = listRef.current;
    if (!list) return;
    stick.current = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
    if (list.scrollTop < 200) void chat.loadOlder(id);
  };

  const onReply = useCallback((m: Message) => {
    setEditing(null);
    setReplyTo(m);
    composerRef.current?.focus();
  }, []);
  const onEdit = useCallback((m: Message) => {
    setReplyTo(null);
    setEditing(m);
    composerRef.current?.focus();
  }, []);
  const onDelete = useCallback((m: Message) => setDeleting(m), []);
  const itemsRef = useRef(items);
  itemsRef.current = items;
  const onJump = useCallback((sender: string, mid: string) => {
    const target = itemsRef.current.find((m) => m.from === sender && m.id === mid);
    const node = target && listRef.current?.querySelector<HTMLElement>(`[data-seq="${target.seq}"] article`);
    if (node) {
      node.scrollIntoView({ block: 'center', behavior: 'smooth' });
      node.focus({ preventScroll: true });
    }
  }, []);

  if (!c) {
    return (
      <section class="conversation missing">
        <p>{chat.listLoaded ? 'This conversation does not exist, or you are not in it.' : 'Loading…'}</p>
        <a href="#/">Back to conversations</a>
      </section>
    );
  }

  const name = conversationName(c, chat.me);
  const others = c.participants.filter((p) => p !== chat.me);
  const typing = chat.typingIn(id);
  const group = others.length > 1;
  let lastMine = -1;
  for (let i = items.length - 1; i >= 0; i--) {
    if (items[i]!.from === chat.me && kindOf(items[i]!) !== 'property') {
      lastMine = items[i]!.seq;
      break;
    }
  }

  const rows: JSX.Element[] = [];
  let prevDay = '';
  let prevFrom = '';
  for (const m of items) {
    const day = dayOf(m.sentAt);
    if (day !== prevDay) {
      rows.push(
        <li class="day" key={`day-${m.seq}`} role="presentation">
          <span>{day}</span>
        </li>,
      );
      prevDay = day;
      prevFrom = '';
    }
    if (kindOf(m) === 'property') {
      const value = m.rich?.property?.value ?? '';
      rows.push(
        <li class="event" key={m.seq}>
          <span>
            {m.from === chat.me ? 'You' : localPart(m.from)} {value ? <>named the conversation “{value}”</> : 'removed the conversation name'}
          </span>
        </li>,
      );
      prevFrom = '';
      continue;
    }
    const mine = m.from === chat.me;
    const st = mine ? chat.statusOf(m, c) : null;
    rows.push(
      <MessageItem
        key={m.seq}
        m={m}
        chat={chat}
        mine={mine}
        showSender={group && prevFrom !== m.from}
        statusKind={st?.kind ?? null}
        statusLabel={st?.label ?? ''}
        statusDetail={st?.detail ?? ''}
        statusInsecure={st?.insecure ?? false}
        lastMine={m.seq === lastMine}
        onReply={onReply}
        onEdit={onEdit}
        onDelete={onDelete}
        onJump={onJump}
      />,
    );
    prevFrom = m.from;
  }

  return (
    <section class="conversation" aria-labelledby="conversation-title">
      <header class="conversation-header">
        <a href="#/" class="icon-button back" aria-label="Back to conversations">
          <Icon name="back" />
        </a>
        <Avatar name={c.title ?? others[0] ?? chat.me} seed={c.id} />
        <div class="conversation-heading">
          <h2 id="conversation-title">{name}</h2>
          <p class="subtitle">
            {c.title || group ? c.participants.map((p) => (chat.isEmail(p) ? `${p} (e-mail)` : p)).join(', ') : others[0] ? (chat.isEmail(others[0]) ? `by e-mail at ${others[0].split('@')[1]}` : `at ${others[0].split('@')[1]}`) : 'Only you'}
          </p>
        </div>
        {chat.push.state !== 'unsupported' && (
          <button
            type="button"
            class="icon-button mute-toggle"
            aria-pressed={chat.push.muted.has(c.id)}
            aria-label={chat.push.muted.has(c.id) ? 'Unmute push notifications for this conversation' : 'Mute push notifications for this conversation'}
            title={chat.push.muted.has(c.id) ? 'Muted: no push notifications (click to unmute)' : 'Mute push notifications'}
            onClick={() => void chat.push.setMuted(c.id, !chat.push.muted.has(c.id)).catch(() => undefined)}
          >
            <Icon name="bell" />
          </button>
        )}
        <button type="button" class="icon-button" aria-label="Rename conversation" title="Rename conversation" onClick={() => setRenaming(true)}>
          <Icon name="edit" />
        </button>
      </header>
      <div class="messages" ref={listRef} onScroll={onScroll} role="log" aria-label={`Messages with ${name}`} aria-live="polite" aria-relevant="additions">
        {v?.hasMore && (
          <button type="button" class="link load-older" onClick={() => void chat.loadOlder(id)} disabled={v.loadingOlder}>
            {v.loadingOlder ? 'Loading older messages…' : 'Load older messages'}
          </button>
        )}
        {v && !v.loaded && !v.error && <p class="muted center">Loading messages…</p>}
        {v?.error && (
          <p class="error center" role="alert">
            {v.error}
          </p>
        )}
        <ol class="message-list" ref={innerRef}>
          {rows}
          {pending.map((p) => (
            <PendingItem key={p.localId} p={p} chat={chat} />
          ))}
        </ol>
      </div>
      <p class="typing-indicator" aria-live="polite">
        {typing.length > 0 ? (
          <>
            <span class="dots" aria-hidden="true">
              <i />
              <i />
              <i />
            </span>
            {typing.map((t) => (group ? localPart(t) : t)).join(', ')} {typing.length > 1 ? 'are' : 'is'} typing…
          </>
        ) : null}
      </p>
      <Composer
        chat={chat}
        conversationId={id}
        inputRef={composerRef}
        replyTo={replyTo}
        editing={editing}
        onCancel={() => {
          setReplyTo(null);
          setEditing(null);
        }}
        onSent={() => {
          stick.current = true;
          setReplyTo(null);
          setEditing(null);
        }}
        onEditLast={() => {
          const mine = [...items].reverse().find((m) => m.from === chat.me && !m.deleted && kindOf(m) !== 'property');
          if (mine) onEdit(mine);
        }}
      />
      {renaming && <RenameDialog current={c.title ?? ''} onClose={() => setRenaming(false)} onSave={(n) => chat.rename(id, n)} />}
      {deleting && (
        <ConfirmDialog
          title="Delete message?"
          text={`“${textOf(deleting).slice(0, 80) || 'This message'}” will be deleted for everyone in the conversation.`}
          confirm="Delete"
          onClose={() => setDeleting(null)}
          onConfirm={() => void chat.remove(deleting)}
        />
      )}
    </section>
  );
}
