import type { RefObject } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Chat } from '../store';
import { formatSize, localPart, textOf } from '../text';
import type { Message } from '../types';
import { Icon } from './common';

const IMAGE = /^image\/(png|jpeg|gif|webp|avif|bmp)$/;

interface Props {
  chat: Chat;
  conversationId: string;
  inputRef: RefObject<HTMLTextAreaElement | null>;
  replyTo: Message | null;
  editing: Message | null;
  onCancel: () => void;
  onSent: () => void;
  onEditLast: () => void;
  /** Rooms: sends the text this way (no attachments, typing or edits there); false: not sent, the text comes back. */
  onSend?: (text: string) => Promise<boolean>;
}

interface Picked {
  file: File;
  /** blob: URL of an image preview. */
  preview: string | null;
}

export function Composer({ chat, conversationId, inputRef, replyTo, editing, onCancel, onSent, onEditLast, onSend }: Props) {
  const [text, setText] = useState('');
  const [files, setFiles] = useState<Picked[]>([]);

  // Editing puts the message's text into the box; leaving edit mode empties it.
  useEffect(() => {
    setText(editing ? textOf(editing) : '');
  }, [editing]);

  // Image previews are blob: URLs; free them when they are no longer shown.
  const release = (list: Picked[]) => list.forEach((f) => f.preview && URL.revokeObjectURL(f.preview));
  const filesRef = useRef(files);
  filesRef.current = files;
  useEffect(() => () => release(filesRef.current), []);

  // Grow with the text, up to a limit (CSS caps the height).
  useEffect(() => {
    const t = inputRef.current;
    if (!t) return;
    t.style.height = 'auto';
    t.style.height = `${t.scrollHeight}px`;
  }, [text]);

  const submit = async (e?: Event) => {
    e?.preventDefault();
    const body = text;
    if (editing) {
      if (!body.trim() || body === textOf(editing)) return onCancel();
      setText('');
      onSent();
      await chat.edit(editing, body);
      return;
    }
    if (!body.trim() && files.length === 0) return;
    if (onSend) {
      setText('');
      onSent();
      if (!(await onSend(body))) setText((now) => now || body);
      return;
    }
    const picked = files.map((f) => f.file);
    setText('');
    release(files);
    setFiles([]);
    onSent();
    await chat.send(conversationId, body, { replyTo, files: picked });
  };

  const addFiles = (list: FileList | null) => {
    if (!list) return;
    const next = [...files];
    for (const file of Array.from(list)) next.push({ file, preview: IMAGE.test(file.type) ? URL.createObjectURL(file) : null });
    setFiles(next.slice(0, 10));
  };

  return (
    <form class="composer" onSubmit={submit} aria-label="Write a message">
      {(replyTo || editing) && (
        <div class="composer-context">
          <Icon name={editing ? 'edit' : 'reply'} size={16} />
          <span>
            {editing ? (
              'Editing your message'
            ) : (
              <>
                Replying to <strong>{replyTo!.from === chat.me ? 'yourself' : localPart(replyTo!.from)}</strong>: {textOf(replyTo!).slice(0, 80)}
              </>
            )}
          </span>
          <button type="button" class="icon-button" aria-label={editing ? 'Cancel editing' : 'Cancel reply'} onClick={onCancel}>
            <Icon name="close" size={16} />
          </button>
        </div>
      )}
      {files.length > 0 && (
        <ul class="file-previews" aria-label="Files to send">
          {files.map((f, i) => (
            <li key={`${f.file.name}-${i}`}>
              {f.preview ? <img src={f.preview} alt="" /> : <Icon name="file" size={28} />}
              <span class="file-name">{f.file.name}</span>
              <span class="file-size">{formatSize(f.file.size)}</span>
              <button type="button" class="icon-button" aria-label={`Remove ${f.file.name}`} onClick={() => {
                  release([f]);
                  setFiles(files.filter((_, j) => j !== i));
                }}>
                <Icon name="close" size={14} />
              </button>
            </li>
          ))}
        </ul>
      )}
      <div class="composer-row">
        {!editing && !onSend && (
          <label class="icon-button attach" title="Attach files">
            <input
              type="file"
              multiple
              class="sr-only"
              aria-label="Attach files"
              onChange={(e) => {
                addFiles(e.currentTarget.files);
                e.currentTarget.value = '';
              }}
            />
            <Icon name="clip" />
          </label>
        )}
        <textarea
          ref={inputRef}
          rows={1}
          aria-label="Message"
          placeholder={editing ? 'Edit your message' : 'Write a message…'}
          value={text}
          onInput={(e) => {
            const t = e.currentTarget.value;
            setText(t);
            if (!editing && !onSend) chat.setTyping(conversationId, t.trim().length > 0);
          }}
          onBlur={() => !onSend && chat.setTyping(conversationId, false)}
          onPaste={(e) => {
            if (!onSend && e.clipboardData?.files.length) {
              e.preventDefault();
              addFiles(e.clipboardData.files);
            }
          }}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              void submit();
            } else if (e.key === 'Escape' && (replyTo || editing)) {
              e.preventDefault();
              onCancel();
            } else if (e.key === 'ArrowUp' && !text && !editing && !onSend) {
              e.preventDefault();
              onEditLast();
            }
          }}
        />
        <button type="submit" class="send" aria-label={editing ? 'Save edit' : 'Send'} title={editing ? 'Save edit' : 'Send (Enter)'} disabled={!text.trim() && files.length === 0}>
          <Icon name={editing ? 'check' : 'send'} />
        </button>
      </div>
    </form>
  );
}
