import { createContext, type ComponentChildren } from 'preact';
import { useContext, useEffect, useRef } from 'preact/hooks';
import type { Chat } from '../store';
import { hueOf, initials } from '../text';

export const ChatContext = createContext<Chat | null>(null);

export function useChat(): Chat {
  const c = useContext(ChatContext);
  if (!c) throw new Error('no chat');
  return c;
}

export function Avatar({ name, seed, size = 40 }: { name: string; seed?: string; size?: number }) {
  return (
    <span class="avatar" aria-hidden="true" style={{ '--hue': String(hueOf(seed ?? name)), '--size': `${size}px` }}>
      {initials(name)}
    </span>
  );
}

/** The end of a dialog's form: the error (read out when it appears), Cancel and the submit button. */
export function FormFooter({ error, busy, disabled = false, submit, busyLabel, onClose, closeLabel = 'Cancel' }: { error: string | null; busy: boolean; disabled?: boolean; submit: string; busyLabel?: string; onClose: () => void; closeLabel?: string }) {
  return (
    <>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <div class="dialog-buttons">
        <button type="button" onClick={onClose}>
          {closeLabel}
        </button>
        <button type="submit" class="primary" disabled={busy || disabled}>
          {busy && busyLabel ? busyLabel : submit}
        </button>
      </div>
    </>
  );
}

/** A modal dialog (the native <dialog>: focus trapping, Escape, and the backdrop come with it). */
export function Dialog({ title, onClose, children, id }: { title: string; onClose: () => void; children: ComponentChildren; id: string }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => d?.close();
  }, []);
  return (
    <dialog
      ref={ref}
      class="dialog"
      aria-labelledby={`${id}-title`}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
      onClick={(e) => {
        // A click on the backdrop (the dialog element itself, outside its content) closes it.
        if (e.target === ref.current) onClose();
      }}
    >
      <div class="dialog-body">
        <h2 id={`${id}-title`}>{title}</h2>
        {children}
      </div>
    </dialog>
  );
}

type IconName = 'plus' | 'send' | 'clip' | 'back' | 'bell' | 'logout' | 'edit' | 'reply' | 'smile' | 'trash' | 'check' | 'checks' | 'alert' | 'clock' | 'close' | 'file' | 'retry' | 'info' | 'hash';

const PATHS: Record<IconName, string> = {
  plus: 'M12 5v14M5 12h14',
  send: 'M4 12l16-8-6 16-2.5-6.5L4 12z',
  clip: 'M20 11.5l-8.1 8.1a5 5 0 01-7.1-7.1l8.5-8.5a3.3 3.3 0 014.7 4.7l-8.5 8.5a1.7 1.7 0 01-2.4-2.4L15 7',
  back: 'M15 5l-7 7 7 7',
  bell: 'M6 16V11a6 6 0 0112 0v5l2 2H4l2-2zM10 20a2 2 0 004 0',
  logout: 'M15 4h3a2 2 0 012 2v12a2 2 0 01-2 2h-3M10 16l-4-4 4-4M6 12h10',
  edit: 'M4 20h4L19 9l-4-4L4 16v4zM13.5 6.5l4 4',
  reply: 'M10 8L5 12l5 4M5 12h9a5 5 0 015 5v1',
  smile: 'M12 21a9 9 0 100-18 9 9 0 000 18zM8.5 14a4.5 4.5 0 007 0M9 9.5h.01M15 9.5h.01',
  trash: 'M5 7h14M10 7V5h4v2M7 7l1 13h8l1-13',
  check: 'M5 12.5l4.5 4.5L19 7.5',
  checks: 'M2.5 12.5L7 17l9.5-9.5M11 16l1 1 9.5-9.5',
  alert: 'M12 4l9 16H3l9-16zM12 10v4M12 17h.01',
  clock: 'M12 21a9 9 0 100-18 9 9 0 000 18zM12 7v5l3 2',
  close: 'M6 6l12 12M18 6L6 18',
  file: 'M7 3h7l5 5v13H7V3zM14 3v5h5',
  info: 'M12 21a9 9 0 100-18 9 9 0 000 18zM12 11v5M12 8h.01',
  hash: 'M9 4L7 20M17 4l-2 16M4 9h16M3 15h16',
  retry: 'M4 12a8 8 0 0114-5.3L20 9M20 4v5h-5M20 12a8 8 0 01-14 5.3L4 15M4 20v-5h5',
};

export function Icon({ name, size = 20 }: { name: IconName; size?: number }) {
  return (
    <svg class="icon" width={size} height={size} viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">
      <path d={PATHS[name]} />
    </svg>
  );
}
