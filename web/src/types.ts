// The provider's JSON, as docs/api.md and docs/protocol.md describe it.

export type RichKind = 'content' | 'reply' | 'reaction' | 'edit' | 'delete' | 'property';

export interface Reference {
  id: string;
  sender: string;
  type: RichKind;
  text: string | null;
}

export interface AttachmentRef {
  id: string;
  name: string;
  mediaType: string;
  size: number;
  url: string;
}

export interface Rich {
  type: RichKind;
  text?: string;
  reference?: Reference;
  reaction?: { emoji: string; remove?: true };
  property?: { name: 'displayName'; value: string };
  attachments?: AttachmentRef[];
}

export interface Reaction {
  emoji: string;
  count: number;
  by: string[];
}

export interface Message {
  seq: number;
  conversationId: string;
  id: string;
  from: string;
  to: string[];
  sentAt: string;
  message: string;
  messageFormatted?: string;
  format?: string;
  insecure?: boolean;
  rich?: Rich;
  edited?: boolean;
  editedAt?: string;
  editCount?: number;
  deleted?: boolean;
  deletedAt?: string;
  reactions?: Reaction[];
}

export interface Conversation {
  id: string;
  participants: string[];
  title: string | null;
  lastSeq: number;
  lastMessage: Message | null;
  unread: number;
  lastReadSeq: number;
  receipts?: Array<{ address: string; seq: number }>;
}

export type DeliveryState = 'queued' | 'delivered' | 'failed' | 'cancelled';

export interface Delivery {
  destination: string;
  state: DeliveryState;
  /** Why the last attempt failed (queued) or why it was given up (failed). */
  error: string | null;
  insecure: boolean;
}

// Rooms (docs/rooms.md): hosted at one provider, addressed name#domain.

export type RoomRole = 'owner' | 'moderator' | 'member';

export interface Room {
  room: string;
  name: string;
  /** Rooms hosted elsewhere: their host; the rest of the info is the host's to give. */
  host?: string;
  visibility?: 'public' | 'invite';
  history?: 'join' | 'start';
  title?: string | null;
  topic?: string | null;
  members?: number;
  lastSeq?: number;
  role: RoomRole;
}

export interface RoomMessage {
  room: string;
  seq: number;
  id: string;
  from: string;
  sentAt: string;
  message: string;
  messageFormatted?: string;
  format?: string;
}

export interface RoomMember {
  address: string;
  role: RoomRole;
}

export type RoomChange = 'joined' | 'left' | 'removed' | 'banned';

export type Frame =
  | { type: 'ready'; address: string; cursor: number; expiresAt: string }
  | { type: 'message'; message: Message }
  | { type: 'delivery'; messageId: string; seq: number; conversationId: string; destination: string; state: DeliveryState; error: string | null; insecure: boolean }
  | { type: 'read'; conversationId: string; lastReadSeq: number }
  | { type: 'typing'; conversationId: string; from: string; state: 'typing' | 'stopped'; expiresAt: string }
  | { type: 'receipt'; conversationId: string; from: string; messageId: string; messageSender: string; seq: number | null; readAt: string }
  | { type: 'settings'; sendReadReceipts: boolean }
  | { type: 'pong' }
  | { type: 'roomMessage'; message: RoomMessage }
  | { type: 'roomMembers'; room: string; address: string; change: RoomChange }
  | { type: 'roomMessageRemoved'; room: string; seq: number }
  | { type: 'roomUpdated'; room: Omit<Room, 'role'> };

export function kindOf(m: Pick<Message, 'rich'>): RichKind {
  return m.rich?.type ?? 'content';
}

/** Messages shown as bubbles; the other kinds act on them (or are shown as events). */
export function isBubble(m: Message): boolean {
  const k = kindOf(m);
  return k === 'content' || k === 'reply';
}

export const keyOf = (sender: string, id: string): string => `${sender}\n${id}`;
