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
  state: string; // 'queued' | 'delivered' | 'failed'
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
}
