import { useState } from 'preact/hooks';
import type { Chat } from '../store';
import { conversationName, formatTime, localPart, preview } from '../text';
import { Avatar, Icon } from './common';
import { NewConversationDialog } from './Dialogs';
import { DomainsDialog } from './Domains';

export function Sidebar({ chat, selected, onLogout }: { chat: Chat; selected: string | null; onLogout: () => void }) {
  const [creating, setCreating] = useState(false);
  const [domainsOpen, setDomainsOpen] = useState(false);
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
      </nav>
      {domainsOpen && <DomainsDialog chat={chat} onClose={() => setDomainsOpen(false)} />}
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
