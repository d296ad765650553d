import { useEffect, useLayoutEffect, useState } from 'preact/hooks';
import { ApiError, Session } from '../api';
import { Chat } from '../store';
import { Auth } from './Auth';
import { ChatContext, Icon } from './common';
import { Sidebar } from './Sidebar';
import { ConversationView } from './Conversation';
import { JoinView, RoomView } from './Room';

type Route = { kind: 'conversation'; id: string } | { kind: 'room'; room: string } | { kind: 'join'; referral: string } | null;

/**
 * Routes live in the hash (#/c/{id}, #/r/{name#domain URL-encoded}, #/join?room=…&code=…): the
 * path stays "/", so no API route is ever shadowed.
 */
function currentRoute(): Route {
  const h = location.hash;
  const c = /^#\/c\/(c[A-Za-z0-9_-]{43})$/.exec(h);
  if (c) return { kind: 'conversation', id: c[1]! };
  const r = /^#\/r\/([^/?]+)$/.exec(h);
  if (r) {
    try {
      const room = decodeURIComponent(r[1]!);
      if (room.includes('#')) return { kind: 'room', room };
    } catch {
      /* not a room */
    }
  }
  const j = /^#\/join\?(.*)$/.exec(h);
  if (j && /(^|&)room=/.test(j[1]!)) return { kind: 'join', referral: j[1]! };
  return null;
}

const sameRoute = (a: Route, b: Route) => JSON.stringify(a) === JSON.stringify(b);

function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const on = () => setRoute((old) => {
      const next = currentRoute();
      return sameRoute(old, next) ? old : next;
    });
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
  const conversation = route?.kind === 'conversation' ? route.id : null;
  const room = route?.kind === 'room' ? route.room : null;
  useEffect(() => chat.select(conversation), [chat, conversation]);
  useEffect(() => chat.rooms.select(room), [chat, room]);

  useEffect(() => {
    const unread = [...chat.conversations.values()].reduce((n, c) => n + c.unread, 0) + [...chat.rooms.unread.values()].reduce((n, x) => n + x, 0);
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
      <Sidebar chat={chat} selected={conversation} selectedRoom={room} onLogout={onLogout} />
      <main class="main" id="main">
        {route?.kind === 'conversation' ? (
          <ConversationView key={route.id} chat={chat} id={route.id} />
        ) : route?.kind === 'room' ? (
          <RoomView key={route.room} chat={chat} room={route.room} />
        ) : route?.kind === 'join' ? (
          <JoinView key={route.referral} chat={chat} referral={route.referral} />
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
