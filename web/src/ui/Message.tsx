import { memo } from 'preact/compat';
import { useEffect, useState } from 'preact/hooks';
import type { Chat, Pending } from '../store';
import { markdownHtml } from '../markdown';
import { formatSize, formatTime, localPart, textOf } from '../text';
import type { AttachmentRef, Message } from '../types';
import { Icon } from './common';

export const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🎉'];
const INLINE_IMAGES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/avif', 'image/bmp']);

/** The message's text as HTML (markdown) or as plain text (conversations and rooms). */
export function Body({ m }: { m: Pick<Message, 'message' | 'messageFormatted' | 'format' | 'deleted' | 'rich'> }) {
  if (m.deleted) return <p class="deleted">This message was deleted.</p>;
  const text = textOf(m);
  if (m.format === 'text/markdown' && typeof m.messageFormatted === 'string' && m.messageFormatted.trim()) {
    return <div class="text markdown" dangerouslySetInnerHTML={{ __html: markdownHtml(m.messageFormatted) }} />;
  }
  if (!text.trim()) return null;
  return <p class="text plain">{text}</p>;
}

function AttachmentView({ a, chat }: { a: AttachmentRef; chat: Chat }) {
  const image = INLINE_IMAGES.has(a.mediaType.split(';')[0]!.trim().toLowerCase());
  const [url, setUrl] = useState<string | null>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    if (!image) return;
    let live = true;
    chat.attachmentUrl(a.id).then(
      (u) => live && setUrl(u),
      () => live && setFailed(true),
    );
    return () => {
      live = false;
    };
  }, [a.id]);

  const download = async () => {
    try {
      const u = await chat.attachmentUrl(a.id);
      const link = document.createElement('a');
      link.href = u;
      link.download = a.name;
      link.rel = 'noopener';
      document.body.appendChild(link);
      link.click();
      link.remove();
    } catch {
      chat.notice(`Could not download ${a.name}.`);
    }
  };

  if (image && !failed) {
    return url ? (
      <a class="attachment-image" href={url} target="_blank" rel="noopener noreferrer" title={`${a.name} (${formatSize(a.size)}) — open full size`}>
        <img src={url} alt={a.name} />
      </a>
    ) : (
      <div class="attachment-image placeholder" role="img" aria-label={`${a.name}, loading`}>
        Loading {a.name}…
      </div>
    );
  }
  return (
    <button type="button" class="attachment-file" onClick={download} aria-label={`Download ${a.name}, ${formatSize(a.size)}`}>
      <Icon name="file" size={22} />
      <span class="attachment-name">{a.name}</span>
      <span class="attachment-size">{formatSize(a.size)}</span>
    </button>
  );
}

export interface Status {
  kind: 'sent' | 'delivered' | 'read' | 'queued' | 'failed';
  label: string;
  detail: string;
  insecure: boolean;
}

const STATUS_ICON = { sent: 'check', delivered: 'checks', read: 'checks', queued: 'clock', failed: 'alert' } as const;

interface ItemProps {
  m: Message;
  chat: Chat;
  mine: boolean;
  showSender: boolean;
  /** For our own messages. */
  statusKind: Status['kind'] | null;
  statusLabel: string;
  statusDetail: string;
  statusInsecure: boolean;
  lastMine: boolean;
  onReply: (m: Message) => void;
  onEdit: (m: Message) => void;
  onDelete: (m: Message) => void;
  onJump: (sender: string, id: string) => void;
}

export const MessageItem = memo(function MessageItem(p: ItemProps) {
  const { m, chat, mine } = p;
  const [picking, setPicking] = useState(false);
  const text = textOf(m);
  const who = mine ? 'You' : m.from;
  const files = m.deleted ? [] : (m.rich?.attachments ?? []);
  const summary = m.deleted ? 'deleted message' : text.trim() ? text.replace(/\s+/g, ' ').slice(0, 120) : files.map((f) => f.name).join(', ');
  const ref = m.rich?.type === 'reply' ? m.rich.reference : undefined;

  return (
    <li class={`message ${mine ? 'mine' : 'theirs'}${p.lastMine ? ' last-mine' : ''}`} data-seq={m.seq}>
      <article
        class="message-inner"
        tabIndex={0}
        aria-label={`${who}: ${summary}`}
        onKeyDown={(e) => {
          if (e.target !== e.currentTarget) return;
          if (e.key === 'r') {
            e.preventDefault();
            p.onReply(m);
          }
        }}
      >
        {p.showSender && !mine && <span class="sender">{localPart(m.from)}<span class="sender-domain">@{m.from.split('@')[1]}</span></span>}
        <div class={`bubble${m.deleted ? ' is-deleted' : ''}`}>
          {ref && (
            <button type="button" class="quote" onClick={() => p.onJump(ref.sender, ref.id)} aria-label={`Reply to ${ref.sender}: ${ref.text ?? 'a deleted message'}. Show it`}>
              <span class="quote-sender">{ref.sender === chat.me ? 'You' : localPart(ref.sender)}</span>
              <span class="quote-text">{ref.text === null ? 'a deleted message' : ref.text}</span>
            </button>
          )}
          <Body m={m} />
          {files.length > 0 && (
            <div class="attachments">
              {files.map((a) => (
                <AttachmentView key={a.id} a={a} chat={chat} />
              ))}
            </div>
          )}
          <span class="meta">
            {m.edited && !m.deleted && <span class="edited">edited</span>}
            <time dateTime={m.sentAt} title={new Date(m.sentAt).toLocaleString()}>
              {formatTime(m.sentAt)}
            </time>
            {mine && p.statusKind && (
              <span class={`status status-${p.statusKind}`} title={p.statusDetail}>
                <Icon name={STATUS_ICON[p.statusKind]} size={14} />
                <span class="status-text">{p.statusLabel}</span>
              </span>
            )}
          </span>
        </div>
        {m.insecure && (
          <p class="warning insecure" role="note">
            <Icon name="alert" size={14} /> Not verified: this message came over an insecure link from {m.from.split('@')[1]}.
          </p>
        )}
        {mine && p.statusInsecure && !m.insecure && (
          <p class="warning insecure" role="note">
            <Icon name="alert" size={14} /> Sent over an insecure link.
          </p>
        )}
        {mine && (p.statusKind === 'failed' || p.statusKind === 'queued') && p.statusDetail && (
          <p class={p.statusKind === 'failed' ? 'failure' : 'problem'} role={p.statusKind === 'failed' ? 'alert' : 'status'}>
            {p.statusDetail}
            {p.statusKind === 'failed' && (
              <button type="button" class="link" onClick={() => void chat.resend(m)}>
                <Icon name="retry" size={14} /> Retry
              </button>
            )}
          </p>
        )}
        {m.reactions && m.reactions.length > 0 && (
          <div class="reactions" role="group" aria-label="Reactions">
            {m.reactions.map((r) => {
              const own = r.by.includes(chat.me);
              return (
                <button
                  type="button"
                  key={r.emoji}
                  class={`reaction${own ? ' own' : ''}`}
                  aria-pressed={own}
                  aria-label={`${r.emoji} ${r.count}: ${r.by.map((b) => (b === chat.me ? 'you' : b)).join(', ')}`}
                  title={r.by.join(', ')}
                  onClick={() => void chat.react(m, r.emoji)}
                >
                  <span aria-hidden="true">{r.emoji}</span> <span aria-hidden="true">{r.count}</span>
                </button>
              );
            })}
          </div>
        )}
        {!m.deleted && (
          <div class="actions" role="toolbar" aria-label="Message actions">
            <button type="button" class="icon-button" aria-label="Reply" title="Reply" onClick={() => p.onReply(m)}>
              <Icon name="reply" size={18} />
            </button>
            <button type="button" class="icon-button" aria-label="React" title="React" aria-expanded={picking} onClick={() => setPicking(!picking)}>
              <Icon name="smile" size={18} />
            </button>
            {mine && (
              <button type="button" class="icon-button" aria-label="Edit" title="Edit" onClick={() => p.onEdit(m)}>
                <Icon name="edit" size={18} />
              </button>
            )}
            {mine && (
              <button type="button" class="icon-button" aria-label="Delete" title="Delete" onClick={() => p.onDelete(m)}>
                <Icon name="trash" size={18} />
              </button>
            )}
          </div>
        )}
        {picking && (
          <div
            class="picker"
            role="group"
            aria-label="Pick a reaction"
            onKeyDown={(e) => {
              if (e.key === 'Escape') setPicking(false);
            }}
          >
            {REACTIONS.map((emoji) => (
              <button
                type="button"
                key={emoji}
                aria-label={`React with ${emoji}`}
                onClick={() => {
                  setPicking(false);
                  void chat.react(m, emoji);
                }}
              >
                {emoji}
              </button>
            ))}
          </div>
        )}
      </article>
    </li>
  );
});

export function PendingItem({ p, chat }: { p: Pending; chat: Chat }) {
  const summary = p.text.trim() ? p.text.replace(/\s+/g, ' ').slice(0, 120) : p.files.map((f) => f.name).join(', ');
  return (
    <li class="message mine pending">
      <article class="message-inner" tabIndex={0} aria-label={`You: ${summary}`}>
        <div class="bubble">
          {p.replyTo && (
            <span class="quote">
              <span class="quote-sender">{localPart(p.replyTo.from)}</span>
              <span class="quote-text">{textOf(p.replyTo)}</span>
            </span>
          )}
          {p.text.trim() && <div class="text markdown" dangerouslySetInnerHTML={{ __html: markdownHtml(p.text) }} />}
          {p.files.length > 0 && (
            <div class="attachments">
              {p.files.map((f) => (
                <span class="attachment-file" key={f.name}>
                  <Icon name="file" size={22} />
                  <span class="attachment-name">{f.name}</span>
                  <span class="attachment-size">{formatSize(f.size)}</span>
                </span>
              ))}
            </div>
          )}
          <span class="meta">
            <span class={`status status-${p.state === 'failed' ? 'failed' : 'sending'}`}>
              <Icon name={p.state === 'failed' ? 'alert' : 'clock'} size={14} />
              <span class="status-text">{p.state === 'failed' ? 'Failed' : 'Sending…'}</span>
            </span>
          </span>
        </div>
        {p.state === 'failed' && (
          <p class="failure" role="alert">
            Not sent: {p.error}
            <button type="button" class="link" onClick={() => void chat.retry(p)}>
              <Icon name="retry" size={14} /> Retry
            </button>
            <button type="button" class="link" onClick={() => chat.discard(p)}>
              Discard
            </button>
          </p>
        )}
      </article>
    </li>
  );
}
