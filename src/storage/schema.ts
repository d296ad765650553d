// Database schema as Kysely types. Every capability reads and writes only its own tables
// (accounts: users; auth: sessions/access_tokens; messaging: conversations/members/messages/
// read_markers; federation: outbox/peers/signing_keys/inbound_jti/blocked_domains).
// Timestamps are integer milliseconds since the epoch (BIGINT on PostgreSQL, parsed to number).
// Booleans are 0/1 integers so the same queries run on SQLite and PostgreSQL.
import type { Generated } from 'kysely';

export interface UsersTable {
  id: Generated<number>;
  username: string;
  password_hash: string;
  created_at: number;
  /** Set when the account is removed: the name stays taken so nobody inherits its history. */
  removed_at: number | null;
}

export interface SessionsTable {
  id: string;
  user_id: number;
  refresh_hash: string;
  created_at: number;
  refreshed_at: number;
  expires_at: number;
  revoked_at: number | null;
}

export interface AccessTokensTable {
  token_hash: string;
  session_id: string;
  user_id: number;
  expires_at: number;
}

export interface ConversationsTable {
  id: string;
  participants: string; // JSON array, canonical order
  created_at: number;
  last_seq: number;
  title: string | null;
  title_seq: number | null;
  title_at: number | null;
  title_key: string | null;
}

export interface ConversationMembersTable {
  conversation_id: string;
  address: string;
  is_local: number;
}

export interface MessagesTable {
  seq: Generated<number>;
  id: string;
  sender: string;
  conversation_id: string;
  sent_at: string;
  received_at: number;
  body: string; // the intertalk message object as JSON, exactly as served
  origin: string; // 'local' | remote domain
  insecure: number;
  /** content | reply | reaction | edit | delete | property (docs/protocol.md). */
  kind: Generated<string>;
  ref_sender: string | null;
  ref_id: string | null;
}

export interface MessageStateTable {
  seq: number;
  text: string | null;
  formatted: string | null;
  format: string | null;
  edit_count: Generated<number>;
  last_edit_seq: number | null;
  edited_at: string | null;
  deleted_at: string | null;
}

export interface ReactionsTable {
  conversation_id: string;
  target_sender: string;
  target_id: string;
  reactor: string;
  emoji: string;
  seq: number;
}

export interface ReceiptsTable {
  conversation_id: string;
  address: string;
  message_sender: string;
  message_id: string;
  message_seq: number | null;
  read_at: number;
  /** 0: one of our users read with receipts turned off (kept, shown to nobody); 1 otherwise. */
  shared: Generated<number>;
}

export interface UserSettingsTable {
  user_id: number;
  send_read_receipts: number;
}

export interface AttachmentsTable {
  id: string;
  media_type: string;
  size: number;
  created_at: number;
  uploader: string;
  origin: string;
  complete: Generated<number>;
  /** The bytes (BLOB on SQLite, BYTEA on PostgreSQL). */
  data: Buffer;
  touched_at: number;
  referenced: Generated<number>;
}

export interface AttachmentUploadsTable {
  attachment_id: string;
  uploader: string;
  media_type: string;
  name: string | null;
  size: number;
  created_at: number;
}

export interface AttachmentFetchesTable {
  attachment_id: string;
  domain: string;
  url: string;
  media_type: string;
  size: number;
  sender: string;
  recipient: string;
  state: string; // 'pending' | 'done' | 'failed'
  attempts: Generated<number>;
  next_attempt_at: number;
  lease_until: number | null;
  last_error: string | null;
  created_at: number;
  fetched_at: number | null;
}

export interface AttachmentLinkKeysTable {
  id: string;
  secret: string;
  created_at: number;
}

export interface AttachmentRefsTable {
  attachment_id: string;
  conversation_id: string;
  message_seq: number;
}

export interface ReadMarkersTable {
  address: string;
  conversation_id: string;
  last_read_seq: number;
  updated_at: number;
}

export interface OutboxTable {
  id: Generated<number>;
  message_seq: number;
  destination: string;
  recipients: string; // JSON array of addresses at the destination
  state: string; // 'queued' | 'delivered' | 'failed' | 'cancelled'
  attempts: number;
  created_at: number;
  next_attempt_at: number;
  last_error: string | null;
  delivered_at: number | null;
  lease_owner: string | null;
  lease_until: number | null;
}

export interface FederationPeersTable {
  domain: string;
  failures: number;
  backoff_until: number;
  last_attempt_at: number | null;
  last_success_at: number | null;
  last_error: string | null;
  last_error_at: number | null;
  /** The instance draining this destination's queue (one at a time keeps deliveries in order). */
  lease_owner: string | null;
  lease_until: number | null;
}

export interface SigningKeysTable {
  kid: string;
  alg: string;
  private_jwk: string;
  public_jwk: string;
  created_at: number;
  retired_at: number | null;
  /** Retired keys stay published until this time; null while active. */
  publish_until: number | null;
}

export interface InboundJtiTable {
  iss: string;
  jti: string;
  expires_at: number;
  request_hash: string;
}

export interface BlockedDomainsTable {
  domain: string;
  reason: string | null;
  created_at: number;
}

export interface PushVapidTable {
  id: string;
  public_key: string;
  private_key: string;
  validation_secret: string;
  created_at: number;
}

export interface PushSubscriptionsTable {
  user_id: number;
  id: string;
  client: string;
  device: string;
  msgtype: string;
  endpoint: string;
  p256dh: string;
  auth: string;
  created_at: number;
  validated: Generated<number>;
  validate_by: number;
}

export interface PushQueueTable {
  id: Generated<number>;
  user_id: number;
  subscription_id: string;
  kind: string;
  message_seq: number;
  conversation_id: string | null;
  payload: string;
  ttl: number;
  urgency: string;
  topic: string | null;
  attempts: Generated<number>;
  created_at: number;
  next_attempt_at: number;
  last_error: string | null;
  lease_owner: string | null;
  lease_until: number | null;
}

export interface PushMutesTable {
  user_id: number;
  conversation_id: string;
}

export interface PushSettingsTable {
  user_id: number;
  enabled: Generated<number>;
  content_free: Generated<number>;
}

export interface RoomsTable {
  name: string;
  visibility: string; // 'public' | 'invite'
  history: string; // 'join' | 'start'
  title: string | null;
  topic: string | null;
  created_by: string;
  created_at: number;
  last_seq: Generated<number>;
}

export interface RoomMembersTable {
  room: string;
  address: string;
  role: string; // 'owner' | 'moderator' | 'member'
  joined_at: number;
  joined_seq: number;
}

export interface RoomMessagesTable {
  room: string;
  seq: number;
  id: string;
  sender: string;
  sent_at: string;
  sent_ms: number;
  body: string; // JSON of the room message
  removed_at: number | null;
  created_at: number;
  /** The signed room message (compact JWS) relayed to member providers; null once removed. */
  jws: string | null;
}

export interface RoomDeliveriesTable {
  room: string;
  domain: string;
  last_seq: number;
  failures: number;
  next_attempt_at: number;
  last_error: string | null;
  updated_at: number;
  lease_owner: string | null;
  lease_until: number | null;
}

export interface RemoteRoomMembersTable {
  room: string; // name#host
  address: string;
  joined_seq: number;
  joined_at: number;
}

export interface RemoteRoomMessagesTable {
  room: string; // name#host
  seq: number;
  id: string;
  sender: string;
  sent_ms: number;
  body: string; // JSON of the room message (as served to clients)
  jws: string;
  created_at: number;
}

export interface RoomInvitesTable {
  code: string;
  room: string;
  uses_left: number | null; // null: multi-use
  created_by: string;
  created_at: number;
}

export interface RoomBansTable {
  room: string;
  subject: string; // an address or a domain
  created_by: string;
  created_at: number;
}

export interface PersonalDomainsTable {
  domain: string;
  user_id: number;
  state: string; // 'pending' | 'verified' | 'failed'
  step: string | null;
  message: string | null;
  server: string | null;
  via: string | null;
  created_at: number;
  checked_at: number | null;
  verified_at: number | null;
  next_check_at: number;
}

/** Tokens we issued as a callback-flow receiver (007_callback_flow): their SHA-256 only. */
export interface CallbackTokensTable {
  token_hash: string;
  flow: string; // 'message' | 'session'
  domain: string;
  message_id: string | null;
  peer: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
  revoked_at: number | null;
}

/** Auth codes we issued as a callback-flow sender (token variant): their SHA-256 only. */
export interface CallbackCodesTable {
  code_hash: string;
  domain: string;
  destination: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
}

/** Tokens receivers granted us: by endpoint, sender domain and message id ('' for a session). */
export interface CallbackHeldTable {
  destination: string;
  domain: string;
  message_id: string;
  token: string;
  created_at: number;
  expires_at: number;
}

/** Message-IDs the e-mail bridge sent or stored, and the intertalk message each one is. */
export interface EmailMessagesTable {
  message_id: string;
  conversation_id: string;
  sender: string;
  msg_id: string;
  direction: string; // 'out' | 'in'
  created_at: number;
}

/** A Chat-Group-ID and the conversation it currently is. */
export interface EmailGroupsTable {
  group_id: string;
  conversation_id: string;
  name: string | null;
  updated_at: number;
}

/** Our users' Autocrypt (OpenPGP) keys. */
export interface EmailKeysTable {
  address: string;
  fingerprint: string;
  public_key: string;
  private_key: string;
  created_at: number;
}

/** A correspondent's key as last seen in an Autocrypt header. */
export interface EmailPeerKeysTable {
  address: string;
  fingerprint: string;
  public_key: string;
  prefer_encrypt: string;
  seen_at: number;
}

/** How far a mailbox has been read, and the instance reading it. */
export interface EmailInboundTable {
  mailbox: string;
  uid_validity: number;
  last_uid: number;
  lease_owner: string | null;
  lease_until: number | null;
}

export interface Database {
  users: UsersTable;
  sessions: SessionsTable;
  access_tokens: AccessTokensTable;
  conversations: ConversationsTable;
  conversation_members: ConversationMembersTable;
  messages: MessagesTable;
  read_markers: ReadMarkersTable;
  outbox: OutboxTable;
  federation_peers: FederationPeersTable;
  signing_keys: SigningKeysTable;
  inbound_jti: InboundJtiTable;
  blocked_domains: BlockedDomainsTable;
  message_state: MessageStateTable;
  reactions: ReactionsTable;
  receipts: ReceiptsTable;
  user_settings: UserSettingsTable;
  attachments: AttachmentsTable;
  attachment_refs: AttachmentRefsTable;
  attachment_uploads: AttachmentUploadsTable;
  attachment_fetches: AttachmentFetchesTable;
  attachment_link_keys: AttachmentLinkKeysTable;
  push_vapid: PushVapidTable;
  push_subscriptions: PushSubscriptionsTable;
  push_queue: PushQueueTable;
  push_mutes: PushMutesTable;
  push_settings: PushSettingsTable;
  rooms: RoomsTable;
  room_members: RoomMembersTable;
  room_messages: RoomMessagesTable;
  room_invites: RoomInvitesTable;
  room_bans: RoomBansTable;
  room_deliveries: RoomDeliveriesTable;
  remote_room_members: RemoteRoomMembersTable;
  remote_room_messages: RemoteRoomMessagesTable;
  personal_domains: PersonalDomainsTable;
  callback_tokens: CallbackTokensTable;
  callback_codes: CallbackCodesTable;
  callback_held: CallbackHeldTable;
  email_messages: EmailMessagesTable;
  email_groups: EmailGroupsTable;
  email_keys: EmailKeysTable;
  email_peer_keys: EmailPeerKeysTable;
  email_inbound: EmailInboundTable;
}
