import { useState } from 'preact/hooks';
import { describe, type Chat } from '../store';
import { parseRecipients } from '../text';
import { Dialog } from './common';

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
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <div class="dialog-buttons">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Starting…' : 'Start conversation'}
          </button>
        </div>
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
