import { useState } from 'preact/hooks';
import { describe, type Chat } from '../store';
import { parseJoin } from '../rooms';
import { parseRecipients } from '../text';
import { Dialog, FormFooter } from './common';

export function NewConversationDialog({ chat, onClose, onStarted }: { chat: Chat; onClose: () => void; onStarted: (id: string) => void }) {
  const [to, setTo] = useState('');
  const [text, setText] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    const r = parseRecipients(to, chat.me);
    if (!r.ok) return setError(r.error);
    if (!text.trim()) return setError('Write a first message.');
    setBusy(true);
    try {
      onStarted(await chat.startConversation(r.addresses, text));
    } catch (err) {
      setError(describe(err));
      setBusy(false);
    }
  };

  return (
    <Dialog id="new-conversation" title="New conversation" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <label for="new-to">To</label>
        <input
          id="new-to"
          autocomplete="off"
          autocapitalize="none"
          spellcheck={false}
          placeholder="bob@example.org, carol@example.net"
          aria-describedby="new-to-hint"
          aria-invalid={error ? true : undefined}
          value={to}
          onInput={(e) => setTo(e.currentTarget.value)}
        />
        <p class="hint" id="new-to-hint">
          One or more addresses, at any provider, separated by commas.
        </p>
        <label for="new-text">First message</label>
        <textarea id="new-text" rows={3} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        <FormFooter error={error} busy={busy} submit="Start conversation" busyLabel="Starting…" onClose={onClose} />
      </form>
    </Dialog>
  );
}

export function RenameDialog({ current, onClose, onSave }: { current: string; onClose: () => void; onSave: (name: string) => Promise<boolean> }) {
  const [name, setName] = useState(current);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    if (await onSave(name.trim())) onClose();
    else setBusy(false);
  };
  return (
    <Dialog id="rename" title="Rename conversation" onClose={onClose}>
      <form onSubmit={submit}>
        <label for="rename-input">Conversation name</label>
        <input id="rename-input" maxLength={128} value={name} onInput={(e) => setName(e.currentTarget.value)} aria-describedby="rename-hint" />
        <p class="hint" id="rename-hint">
          Everyone in the conversation sees the new name. Leave it empty to show the participants instead.
        </p>
        <div class="dialog-buttons">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy}>
            Save
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export function ConfirmDialog({ title, text, confirm, onClose, onConfirm }: { title: string; text: string; confirm: string; onClose: () => void; onConfirm: () => void }) {
  return (
    <Dialog id="confirm" title={title} onClose={onClose}>
      <p>{text}</p>
      <div class="dialog-buttons">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button
          type="button"
          class="danger"
          onClick={() => {
            onConfirm();
            onClose();
          }}
        >
          {confirm}
        </button>
      </div>
    </Dialog>
  );
}

export function NewRoomDialog({ chat, onClose, onCreated }: { chat: Chat; onClose: () => void; onCreated: (room: string) => void }) {
  const [name, setName] = useState('');
  const [title, setTitle] = useState('');
  const [topic, setTopic] = useState('');
  const [visibility, setVisibility] = useState<'public' | 'invite'>('public');
  const [history, setHistory] = useState<'join' | 'start'>('join');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    if (!name.trim()) return setError('Give the room a name, like “lobby”.');
    setBusy(true);
    try {
      onCreated(await chat.rooms.create({ name, title, topic, visibility, history }));
    } catch (err) {
      setError(describe(err));
      setBusy(false);
    }
  };

  return (
    <Dialog id="new-room" title="New room" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <label for="room-name">Room name</label>
        <input
          id="room-name"
          autocomplete="off"
          autocapitalize="none"
          spellcheck={false}
          placeholder="lobby"
          aria-describedby="room-name-hint"
          aria-invalid={error ? true : undefined}
          value={name}
          onInput={(e) => setName(e.currentTarget.value)}
        />
        <p class="hint" id="room-name-hint">
          Its address is <strong>{(name.trim().toLowerCase() || 'name')}#{chat.domain}</strong>: letters, digits, “.”, “_” and “-”.
        </p>
        <label for="room-title">Title</label>
        <input id="room-title" maxLength={200} placeholder="The lobby" value={title} onInput={(e) => setTitle(e.currentTarget.value)} />
        <label for="room-topic">Topic</label>
        <textarea id="room-topic" rows={2} maxLength={1000} value={topic} onInput={(e) => setTopic(e.currentTarget.value)} />
        <fieldset class="choices">
          <legend>Who can join</legend>
          <label class="choice">
            <input type="radio" name="room-visibility" checked={visibility === 'public'} onChange={() => setVisibility('public')} /> Public: anyone can join by name
          </label>
          <label class="choice">
            <input type="radio" name="room-visibility" checked={visibility === 'invite'} onChange={() => setVisibility('invite')} /> Invite only: with an invite link
          </label>
        </fieldset>
        <fieldset class="choices">
          <legend>What newcomers can read</legend>
          <label class="choice">
            <input type="radio" name="room-history" checked={history === 'join'} onChange={() => setHistory('join')} /> Messages from when they join
          </label>
          <label class="choice">
            <input type="radio" name="room-history" checked={history === 'start'} onChange={() => setHistory('start')} /> Everything from the start
          </label>
        </fieldset>
        <FormFooter error={error} busy={busy} submit="Create room" busyLabel="Creating…" onClose={onClose} />
      </form>
    </Dialog>
  );
}

export function JoinRoomDialog({ chat, onClose, onJoined }: { chat: Chat; onClose: () => void; onJoined: (room: string) => void }) {
  const [input, setInput] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    const what = parseJoin(input, chat.domain);
    if (!what) return setError('Give a room address like lobby#example.org, or paste an invite link.');
    setBusy(true);
    try {
      onJoined(await chat.rooms.join(what));
    } catch (err) {
      setError(describe(err));
      setBusy(false);
    }
  };

  return (
    <Dialog id="join-room" title="Join room" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <label for="join-input">Room or invite link</label>
        <input
          id="join-input"
          autocomplete="off"
          autocapitalize="none"
          spellcheck={false}
          placeholder="lobby#example.org"
          aria-describedby="join-input-hint"
          aria-invalid={error ? true : undefined}
          value={input}
          onInput={(e) => setInput(e.currentTarget.value)}
        />
        <p class="hint" id="join-input-hint">
          A room’s address (name#domain, at any provider), or an invite link someone sent you.
        </p>
        <FormFooter error={error} busy={busy} submit="Join" busyLabel="Joining…" onClose={onClose} />
      </form>
    </Dialog>
  );
}
