import type { JSX } from 'preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { describe, type Chat } from '../store';
import { roomHref, roomTitle, type Invite, type RoomItem } from '../rooms';
import { formatTime, localPart } from '../text';
import type { Room, RoomChange, RoomMessage } from '../types';
import { Avatar, Icon } from './common';
import { Composer } from './Composer';
import { ConfirmDialog } from './Dialogs';
import { Body } from './Message';

const CHANGED: Record<RoomChange, string> = { joined: 'joined', left: 'left', removed: 'was removed', banned: 'was banned' };
const GONE: Record<RoomChange, string> = {
  joined: '',
  left: 'You left this room.',
  removed: 'You were removed from this room by a moderator.',
  banned: 'You were banned from this room by a moderator.',
};

function policyText(r: Room | undefined): string {
  if (!r || r.host) return r?.host ? `Hosted at ${r.host}` : '';
  const who = r.visibility === 'invite' ? 'Invite only' : 'Public';
  const history = r.history === 'start' ? 'newcomers read everything' : 'newcomers read from when they join';
  return `${who} · ${history}${r.members !== undefined ? ` · ${r.members} ${r.members === 1 ? 'member' : 'members'}` : ''}`;
}

function RoomMessageItem({ m, chat, showSender, canRemove, onRemove }: { m: RoomMessage; chat: Chat; showSender: boolean; canRemove: boolean; onRemove: (m: RoomMessage) => void }) {
  const mine = m.from === chat.me;
  const text = m.message;
  const summary = text.replace(/\s+/g, ' ').slice(0, 120);
  return (
    <li class={`message ${mine ? 'mine' : 'theirs'}`} data-seq={m.seq}>
      <article class="message-inner" tabIndex={0} aria-label={`${mine ? 'You' : m.from}: ${summary}`}>
        {showSender && !mine && (
          <span class="sender">
            {localPart(m.from)}
            <span class="sender-domain">@{m.from.split('@')[1]}</span>
          </span>
        )}
        <div class="bubble">
          <Body m={m} />
          <span class="meta">
            <time dateTime={m.sentAt} title={new Date(m.sentAt).toLocaleString()}>
              {formatTime(m.sentAt)}
            </time>
          </span>
        </div>
        {canRemove && (
          <div class="actions" role="toolbar" aria-label="Message actions">
            <button type="button" class="icon-button" aria-label="Remove message" title="Remove message (moderator)" onClick={() => onRemove(m)}>
              <Icon name="trash" size={18} />
            </button>
          </div>
        )}
      </article>
    </li>
  );
}

export function RoomView({ chat, room }: { chat: Chat; room: string }) {
  const rooms = chat.rooms;
  const r = rooms.list.get(room);
  const v = rooms.views.get(room);
  const [panel, setPanel] = useState(false);
  const [removing, setRemoving] = useState<RoomMessage | null>(null);
  const listRef = useRef<HTMLDivElement>(null);
  const composerRef = useRef<HTMLTextAreaElement>(null);
  const stick = useRef(true);
  const items = v?.items ?? [];

  useLayoutEffect(() => {
    const list = listRef.current;
    if (list && stick.current) list.scrollTop = list.scrollHeight;
  });

  const onScroll = () => {
    const list = listRef.current;
    if (list) stick.current = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  };

  if (!r && !v?.gone) {
    return (
      <section class="conversation missing">
        <p>{rooms.listLoaded ? `You are not in ${room}.` : 'Loading…'}</p>
        {rooms.listLoaded && v?.error && (
          <p class="error" role="alert">
            {v.error}
          </p>
        )}
        <a href="#/">Back to conversations</a>
      </section>
    );
  }

  const title = roomTitle(r, room);
  const moderator = rooms.isModerator(room) && !v?.gone;
  const rows: JSX.Element[] = [];
  let prevFrom = '';
  for (const it of items as RoomItem[]) {
    if (it.kind === 'event') {
      rows.push(
        <li class="event" key={it.key}>
          <span>
            {it.address === chat.me ? 'You' : it.address} {CHANGED[it.change]}
          </span>
        </li>,
      );
      prevFrom = '';
      continue;
    }
    rows.push(<RoomMessageItem key={it.key} m={it.m} chat={chat} showSender={prevFrom !== it.m.from} canRemove={moderator} onRemove={setRemoving} />);
    prevFrom = it.m.from;
  }

  return (
    <div class={`room${panel ? ' with-panel' : ''}`}>
      <section class="conversation" aria-labelledby="room-title">
        <header class="conversation-header">
          <a href="#/" class="icon-button back" aria-label="Back to conversations">
            <Icon name="back" />
          </a>
          <Avatar name={title} seed={room} />
          <div class="conversation-heading">
            <h2 id="room-title">{title}</h2>
            <p class="subtitle" title={r?.topic ?? undefined}>
              {r?.topic ? <span class="room-topic">{r.topic}</span> : room}
            </p>
          </div>
          <button type="button" class="icon-button" aria-label="Room info" title="Room info, members and invites" aria-expanded={panel} onClick={() => setPanel(!panel)}>
            <Icon name="info" />
          </button>
        </header>
        <div class="messages" ref={listRef} onScroll={onScroll} role="log" aria-label={`Messages in ${title}`} aria-live="polite" aria-relevant="additions">
          {v && !v.loaded && !v.error && <p class="muted center">Loading messages…</p>}
          {v?.error && (
            <p class="error center" role="alert">
              {v.error}
            </p>
          )}
          {v?.loaded && items.length === 0 && <p class="muted center">No messages yet.</p>}
          <ol class="message-list">{rows}</ol>
        </div>
        {v?.gone ? (
          <div class="room-gone" role="alert">
            <p>{GONE[v.gone]}</p>
            <a href="#/">Back to conversations</a>
          </div>
        ) : (
          <Composer
            chat={chat}
            conversationId={room}
            inputRef={composerRef}
            replyTo={null}
            editing={null}
            onCancel={() => undefined}
            onSent={() => {
              stick.current = true;
            }}
            onEditLast={() => undefined}
            onSend={async (text) => {
              try {
                await rooms.send(room, text);
                return true;
              } catch (err) {
                chat.notice(`Not sent: ${describe(err)}`);
                return false;
              }
            }}
          />
        )}
        {removing && (
          <ConfirmDialog
            title="Remove message?"
            text={`“${removing.message.slice(0, 80)}” from ${removing.from} will be removed for everyone in the room.`}
            confirm="Remove"
            onClose={() => setRemoving(null)}
            onConfirm={() => void rooms.removeMessage(room, removing.seq).catch((err) => chat.notice(`Could not remove the message: ${describe(err)}`))}
          />
        )}
      </section>
      {panel && <RoomPanel chat={chat} room={room} onClose={() => setPanel(false)} />}
    </div>
  );
}

/** A form's state: busy, and the error (or the result) to show under it. */
function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const run = async (f: () => Promise<string | void>) => {
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const msg = await f();
      if (msg) setDone(msg);
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  };
  const feedback = (
    <>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {done && (
        <p class="info" role="status">
          {done}
        </p>
      )}
    </>
  );
  return { busy, run, feedback };
}

function RoomPanel({ chat, room, onClose }: { chat: Chat; room: string; onClose: () => void }) {
  const rooms = chat.rooms;
  const r = rooms.list.get(room);
  const v = rooms.views.get(room);
  const moderator = rooms.isModerator(room);
  const [title, setTitle] = useState(r?.title ?? '');
  const [topic, setTopic] = useState(r?.topic ?? '');
  const [multiUse, setMultiUse] = useState(false);
  const [invite, setInvite] = useState<Invite | null>(null);
  const [copied, setCopied] = useState(false);
  const [subject, setSubject] = useState('');
  const [leaving, setLeaving] = useState(false);
  const policy = useAction();
  const inviting = useAction();
  const members = useAction();
  const banning = useAction();
  const leave = useAction();

  useEffect(() => {
    if (v && !v.members && !v.gone && !r?.host) void rooms.loadMembers(room);
  }, [room]);

  if (!r) return null;

  const copy = async () => {
    if (!invite) return;
    try {
      await navigator.clipboard.writeText(invite.link);
      setCopied(true);
    } catch {
      chat.notice('Could not copy: select the link and copy it yourself.');
    }
  };

  return (
    <aside class="room-panel" aria-label="Room info">
      <header class="room-panel-header">
        <h3>Room info</h3>
        <button type="button" class="icon-button" aria-label="Close room info" onClick={onClose}>
          <Icon name="close" />
        </button>
      </header>
      <section aria-labelledby="room-about">
        <h4 id="room-about">{roomTitle(r, room)}</h4>
        <p class="room-address">{room}</p>
        <p class="muted">{policyText(r)}</p>
        {r.topic && !moderator && <p class="room-topic-full">{r.topic}</p>}
        <p class="muted">You are {r.role === 'owner' ? 'the owner' : r.role === 'moderator' ? 'a moderator' : 'a member'}.</p>
      </section>

      {moderator && (
        <section aria-labelledby="room-settings">
          <h4 id="room-settings">Title and topic</h4>
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void policy.run(async () => {
                await rooms.update(room, { title: title.trim() || null, topic: topic.trim() || null });
                return 'Saved.';
              });
            }}
          >
            <label for="room-edit-title">Room title</label>
            <input id="room-edit-title" maxLength={200} value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
            <label for="room-edit-topic">Room topic</label>
            <textarea id="room-edit-topic" rows={2} maxLength={1000} value={topic} onInput={(e) => setTopic(e.currentTarget.value)} />
            {policy.feedback}
            <button type="submit" class="primary" disabled={policy.busy}>
              Save title and topic
            </button>
          </form>
        </section>
      )}

      {rooms.canInvite(room) && (
        <section aria-labelledby="room-invite">
          <h4 id="room-invite">Invite</h4>
          <label class="choice">
            <input type="checkbox" checked={multiUse} onChange={(e) => setMultiUse(e.currentTarget.checked)} /> Multi-use (until revoked)
          </label>
          <button
            type="button"
            disabled={inviting.busy}
            onClick={() =>
              void inviting.run(async () => {
                setCopied(false);
                setInvite(await rooms.invite(room, multiUse));
              })
            }
          >
            Create invite link
          </button>
          {inviting.feedback}
          {invite && (
            <div class="invite">
              <label for="invite-link">{invite.multiUse ? 'Invite link (multi-use)' : 'Invite link (single use)'}</label>
              <input id="invite-link" readOnly value={invite.link} onFocus={(e) => e.currentTarget.select()} />
              <button type="button" onClick={() => void copy()}>
                {copied ? 'Copied' : 'Copy link'}
              </button>
            </div>
          )}
        </section>
      )}

      <section aria-labelledby="room-members">
        <h4 id="room-members">Members</h4>
        {r.host && <p class="muted">The member list is kept by {r.host}, the room’s host.</p>}
        {v?.membersError && (
          <p class="error" role="alert">
            {v.membersError}
          </p>
        )}
        {members.feedback}
        <ul class="member-list" aria-label="Members">
          {(v?.members ?? []).map((m) => (
            <li key={m.address}>
              <span class="member-address">{m.address === chat.me ? `${m.address} (you)` : m.address}</span>
              {m.role !== 'member' && <span class="role">{m.role}</span>}
              {moderator && m.address !== chat.me && m.role !== 'owner' && (
                <span class="member-actions">
                  <button type="button" class="link" aria-label={`Remove ${m.address}`} disabled={members.busy} onClick={() => void members.run(async () => {
                      await rooms.removeMember(room, m.address);
                      return `Removed ${m.address}.`;
                    })}>
                    Remove
                  </button>
                  <button type="button" class="link danger-link" aria-label={`Ban ${m.address}`} disabled={members.busy} onClick={() => void members.run(async () => {
                      await rooms.ban(room, m.address);
                      return `Banned ${m.address}.`;
                    })}>
                    Ban
                  </button>
                </span>
              )}
            </li>
          ))}
        </ul>
      </section>

      {moderator && (
        <section aria-labelledby="room-ban">
          <h4 id="room-ban">Ban</h4>
          <form
            onSubmit={(e) => {
              e.preventDefault();
              const s = subject.trim();
              if (!s) return;
              void banning.run(async () => {
                const removed = await rooms.ban(room, s);
                setSubject('');
                return `Banned ${s}${removed.length ? `; removed ${removed.join(', ')}` : ''}.`;
              });
            }}
          >
            <label for="ban-subject">Ban an address or a whole domain</label>
            <input id="ban-subject" autocomplete="off" autocapitalize="none" spellcheck={false} placeholder="eve@example.org or example.org" value={subject} onInput={(e) => setSubject(e.currentTarget.value)} />
            {banning.feedback}
            <button type="submit" class="danger" disabled={banning.busy || !subject.trim()}>
              Ban
            </button>
          </form>
        </section>
      )}

      <section aria-labelledby="room-leave">
        <h4 id="room-leave" class="sr-only">
          Leave
        </h4>
        {leave.feedback}
        <button type="button" class="danger" onClick={() => setLeaving(true)}>
          Leave room
        </button>
      </section>
      {leaving && (
        <ConfirmDialog
          title="Leave room?"
          text={r.visibility === 'invite' ? `You will need a new invite to come back to ${roomTitle(r, room)}.` : `You can join ${room} again later.`}
          confirm="Leave"
          onClose={() => setLeaving(false)}
          onConfirm={() =>
            void leave.run(async () => {
              await rooms.leave(room);
              location.hash = '#/';
            })
          }
        />
      )}
    </aside>
  );
}

/** #/join?room=…&code=…: a referral link. Joins, then opens the room. */
export function JoinView({ chat, referral }: { chat: Chat; referral: string }) {
  const [error, setError] = useState<string | null>(null);
  const started = useRef(false);
  const room = new URLSearchParams(referral).get('room') ?? '';
  useEffect(() => {
    if (started.current) return;
    started.current = true;
    chat.rooms.join({ referral }).then(
      (r) => location.replace(roomHref(r)),
      (err) => setError(describe(err)),
    );
  }, [referral]);
  return (
    <section class="conversation missing" aria-labelledby="join-title">
      <h2 id="join-title">Joining {room || 'a room'}</h2>
      {error ? (
        <p class="error" role="alert">
          Could not join {room}: {error}
        </p>
      ) : (
        <p class="muted">Joining…</p>
      )}
      <a href="#/">Back to conversations</a>
    </section>
  );
}
