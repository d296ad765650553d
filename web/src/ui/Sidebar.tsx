import { useState } from 'preact/hooks';
import type { Chat } from '../store';
import { conversationName, formatTime, localPart, preview } from '../text';
import { Avatar, Icon } from './common';
import { DomainsDialog } from './Domains';
import { JoinRoomDialog, NewConversationDialog, NewRoomDialog } from './Dialogs';
import { roomHref, roomTitle } from '../rooms';

export function Sidebar({ chat, selected, selectedRoom, onLogout }: { chat: Chat; selected: string | null; selectedRoom: string | null; onLogout: () => void }) {
  const [creating, setCreating] = useState(false);
  const [domainsOpen, setDomainsOpen] = useState(false);
  const [roomDialog, setRoomDialog] = useState<'new' | 'join' | null>(null);
  const rooms = chat.rooms.sorted();
  const openRoom = (room: string) => {
    setRoomDialog(null);
    location.hash = roomHref(room);
  };
  const list = chat.sortedConversations();
  // One bell: where Web Push works, its toggle also asks for the permission that in-tab
  // notifications use; the in-tab-only bell is for browsers without push.
  const canNotify = chat.push.state === 'unsupported' && typeof Notification !== 'undefined' && Notification.permission === 'default' && !chat.notificationsAllowed;

  return (
    <aside class="sidebar" aria-label="Conversations">
      <header class="sidebar-header">
        <Avatar name={chat.me} />
        <div class="me">
          <span class="me-name">{localPart(chat.me)}</span>
          <span class="me-address" title="Your address">
            {chat.me}
          </span>
        </div>
        {canNotify && (
          <button type="button" class="icon-button" aria-label="Turn on notifications" title="Turn on notifications" onClick={() => void chat.enableNotifications()}>
            <Icon name="bell" />
          </button>
        )}
        {chat.push.state !== 'unsupported' && (
          <button
            type="button"
            class="icon-button push-toggle"
            aria-pressed={chat.push.state === 'on'}
            aria-label={chat.push.state === 'on' ? 'Turn off push notifications' : 'Turn on push notifications'}
            title={chat.push.error ? `Push notifications: ${chat.push.error}` : chat.push.state === 'on' ? 'Push notifications are on (click to turn off)' : 'Push notifications are off (click to turn on)'}
            disabled={chat.push.state === 'subscribing'}
            onClick={() => void (chat.push.state === 'on' ? chat.push.disable() : chat.push.enable())}
          >
            <Icon name="bell" />
          </button>
        )}
        <button type="button" class="icon-button" aria-label="Log out" title="Log out" onClick={onLogout}>
          <Icon name="logout" />
        </button>
      </header>
      <div class="sidebar-actions">
        <button type="button" class="primary new-conversation" onClick={() => setCreating(true)}>
          <Icon name="plus" size={18} /> New conversation
        </button>
        <button type="button" class="personal-domains" onClick={() => setDomainsOpen(true)}>
          Personal domains
        </button>
        <button
          type="button"
          class="personal-domains contact-card"
          title="Your address and encryption key as a contact card, for people who write to you by e-mail (Delta Chat: import it, then write)"
          onClick={() => void chat.saveContactCard().then((err) => err && window.alert(err))}
        >
          Contact card for e-mail
        </button>
      </div>
      <nav class="conversation-list" aria-label="Conversation list">
        {!chat.listLoaded && !chat.listError && <p class="muted pad">Loading conversations…</p>}
        {chat.listError && (
          <p class="error pad" role="alert">
            {chat.listError}
          </p>
        )}
        {chat.listLoaded && list.length === 0 && <p class="muted pad">No conversations yet. Start one with someone’s address, like bob@example.org.</p>}
        <ul>
          {list.map((c) => {
            const name = conversationName(c, chat.me);
            const typing = chat.typingIn(c.id);
            const last = c.lastMessage;
            return (
              <li key={c.id}>
                <a href={`#/c/${c.id}`} class="conversation-item" aria-current={selected === c.id ? 'page' : undefined}>
                  <Avatar name={c.title ?? (c.participants.find((p) => p !== chat.me) ?? chat.me)} seed={c.id} size={44} />
                  <span class="conversation-text">
                    <span class="conversation-top">
                      <span class="conversation-name">{name}</span>
                      {last && <time dateTime={last.sentAt}>{formatTime(last.sentAt)}</time>}
                    </span>
                    <span class="conversation-bottom">
                      <span class={`conversation-preview${typing.length ? ' typing' : ''}`}>{typing.length ? `${typing.map(localPart).join(', ')} typing…` : preview(last, chat.me)}</span>
                      {c.unread > 0 && (
                        <span class="badge">
                          {c.unread}
                          <span class="sr-only"> unread</span>
                        </span>
                      )}
                    </span>
                  </span>
                </a>
              </li>
            );
          })}
        </ul>
        <section class="room-section" aria-labelledby="rooms-heading">
          <div class="section-header">
            <h2 id="rooms-heading">Rooms</h2>
            <button type="button" class="link" onClick={() => setRoomDialog('new')}>
              New room
            </button>
            <button type="button" class="link" onClick={() => setRoomDialog('join')}>
              Join room
            </button>
          </div>
          {chat.rooms.listError && (
            <p class="error pad" role="alert">
              {chat.rooms.listError}
            </p>
          )}
          {chat.rooms.listLoaded && rooms.length === 0 && <p class="muted pad">No rooms yet. Create one, or join one by its address or an invite link.</p>}
          <ul aria-label="Room list">
            {rooms.map((r) => {
              const unread = chat.rooms.unread.get(r.room) ?? 0;
              return (
                <li key={r.room}>
                  <a href={roomHref(r.room)} class="conversation-item room-item" aria-current={selectedRoom === r.room ? 'page' : undefined}>
                    <Avatar name={roomTitle(r, r.room)} seed={r.room} size={44} />
                    <span class="conversation-text">
                      <span class="conversation-top">
                        <span class="conversation-name">{roomTitle(r, r.room)}</span>
                      </span>
                      <span class="conversation-bottom">
                        <span class="conversation-preview">{r.room}</span>
                        {unread > 0 && (
                          <span class="badge">
                            {unread}
                            <span class="sr-only"> unread</span>
                          </span>
                        )}
                      </span>
                    </span>
                  </a>
                </li>
              );
            })}
          </ul>
        </section>
      </nav>
      {domainsOpen && <DomainsDialog chat={chat} onClose={() => setDomainsOpen(false)} />}
      {roomDialog === 'new' && <NewRoomDialog chat={chat} onClose={() => setRoomDialog(null)} onCreated={openRoom} />}
      {roomDialog === 'join' && <JoinRoomDialog chat={chat} onClose={() => setRoomDialog(null)} onJoined={openRoom} />}
      {creating && (
        <NewConversationDialog
          chat={chat}
          onClose={() => setCreating(false)}
          onStarted={(id) => {
            setCreating(false);
            location.hash = `#/c/${id}`;
          }}
        />
      )}
    </aside>
  );
}
