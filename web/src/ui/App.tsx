import { useEffect, useLayoutEffect, useState } from 'preact/hooks';
import { ApiError, Session } from '../api';
import { Chat } from '../store';
import { Auth } from './Auth';
import { ChatContext, Icon } from './common';
import { Sidebar } from './Sidebar';
import { ConversationView } from './Conversation';

/** Routes live in the hash (#/c/{id}): the path stays "/", so no API route is ever shadowed. */
function currentRoute(): string | null {
  const m = /^#\/c\/(c[A-Za-z0-9_-]{43})$/.exec(location.hash);
  return m ? m[1]! : null;
}

function useRoute(): string | null {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const on = () => setRoute(currentRoute());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function App() {
  const [chat, setChat] = useState<Chat | null>(null);
  const [phase, setPhase] = useState<'restoring' | 'auth' | 'chat'>(Session.hasStored() ? 'restoring' : 'auth');
  const [notice, setNotice] = useState<string | null>(null);

  const begin = (s: Session) => {
    const c = new Chat(s, () => {
      setChat(null);
      setPhase('auth');
      setNotice('You have been logged out.');
    });
    setChat(c);
    setPhase('chat');
    void c.start();
  };

  useEffect(() => {
    if (phase !== 'restoring') return;
    Session.restore().then(
      (s) => (s ? begin(s) : setPhase('auth')),
      (err) => {
        setPhase('auth');
        if (!(err instanceof ApiError)) setNotice('Could not reach the provider to restore your session. Log in again.');
      },
    );
  }, []);

  if (phase === 'restoring') {
    return (
      <main class="splash" aria-busy="true">
        <p>Loading…</p>
      </main>
    );
  }
  if (phase === 'auth' || !chat) {
    return (
      <Auth
        notice={notice}
        onSession={(s) => {
          setNotice(null);
          begin(s);
        }}
      />
    );
  }
  return (
    <ChatContext.Provider value={chat}>
      <ChatApp
        chat={chat}
        onLogout={async () => {
          await chat.logout();
          setChat(null);
          setPhase('auth');
          setNotice(null);
          location.hash = '';
        }}
      />
    </ChatContext.Provider>
  );
}

function ChatApp({ chat, onLogout }: { chat: Chat; onLogout: () => void }) {
  const [, setTick] = useState(0);
  const route = useRoute();
  useLayoutEffect(() => {
    const unsubscribe = chat.subscribe(() => setTick((n) => n + 1));
    // The chat started before this subscription: render whatever changed in between.
    setTick((n) => n + 1);
    return unsubscribe;
  }, [chat]);
  useEffect(() => chat.select(route), [chat, route]);

  useEffect(() => {
    const unread = [...chat.conversations.values()].reduce((n, c) => n + c.unread, 0);
    document.title = unread > 0 ? `(${unread}) intertalk` : 'intertalk';
  });

  return (
    <div class="layout" data-view={route ? 'conversation' : 'list'}>
      {chat.connection === 'offline' && (
        <div class="offline" role="alert">
          <Icon name="alert" size={18} />
          <span>You are offline. Reconnecting…</span>
          <button type="button" class="link" onClick={() => chat.reconnectNow()}>
            Try now
          </button>
        </div>
      )}
      <Sidebar chat={chat} selected={route} onLogout={onLogout} />
      <main class="main" id="main">
        {route ? (
          <ConversationView key={route} chat={chat} id={route} />
        ) : (
          <div class="empty-main">
            <Icon name="send" size={40} />
            <p>Pick a conversation, or start a new one.</p>
          </div>
        )}
      </main>
      <div class="notices" aria-live="assertive">
        {chat.notices.map((n) => (
          <div class="notice" role="alert" key={n.id}>
            <span>{n.text}</span>
            <button type="button" class="icon-button" aria-label="Dismiss" onClick={() => chat.dismiss(n.id)}>
              <Icon name="close" size={16} />
            </button>
          </div>
        ))}
      </div>
    </div>
  );
}
