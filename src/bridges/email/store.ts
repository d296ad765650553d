// The e-mail bridge's tables (migration 008_email): which Message-ID is which intertalk message,
// which Chat-Group-ID is which conversation, our users' keys, correspondents' keys, and how far
// each mailbox has been read. Nothing else in the bridge touches the database directly.
import type { Db } from '../../storage/db.js';
import type { Clock } from '../../util/clock.js';

export interface MappedMessage {
  messageId: string;
  conversationId: string;
  sender: string;
  id: string;
  direction: 'out' | 'in';
}

export interface UserKey {
  address: string;
  fingerprint: string;
  publicKey: string;
  privateKey: string;
}

export interface PeerKey {
  address: string;
  fingerprint: string;
  publicKey: string;
  preferEncrypt: 'mutual' | 'nopreference';
  seenAt: number;
}

export class EmailStore {
  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
  ) {}

  /** Records a Message-ID (first writer wins: a Message-ID is one message forever). */
  async mapMessage(m: MappedMessage): Promise<void> {
    await this.db
      .insertInto('email_messages')
      .values({ message_id: m.messageId, conversation_id: m.conversationId, sender: m.sender, msg_id: m.id, direction: m.direction, created_at: this.clock.now() })
      .onConflict((oc) => oc.column('message_id').doNothing())
      .execute();
  }

  async byMessageId(messageId: string): Promise<MappedMessage | null> {
    const r = await this.db.selectFrom('email_messages').selectAll().where('message_id', '=', messageId).executeTakeFirst();
    return r ? { messageId: r.message_id, conversationId: r.conversation_id, sender: r.sender, id: r.msg_id, direction: r.direction as 'out' | 'in' } : null;
  }

  async byMessage(sender: string, id: string): Promise<MappedMessage | null> {
    const r = await this.db.selectFrom('email_messages').selectAll().where('sender', '=', sender).where('msg_id', '=', id).limit(1).executeTakeFirst();
    return r ? { messageId: r.message_id, conversationId: r.conversation_id, sender: r.sender, id: r.msg_id, direction: r.direction as 'out' | 'in' } : null;
  }

  /**
   * The message an edit chain starts from: e-mail names the original in `Chat-Edit`, while our
   * edits may name the previous edit (COI). Follows at most 100 links.
   */
  async originalOf(sender: string, id: string): Promise<{ sender: string; id: string }> {
    let cur = { sender, id };
    for (let i = 0; i < 100; i++) {
      const r = await this.db.selectFrom('messages').select(['kind', 'ref_sender', 'ref_id']).where('sender', '=', cur.sender).where('id', '=', cur.id).executeTakeFirst();
      if (!r || r.kind !== 'edit' || !r.ref_id || !r.ref_sender) return cur;
      cur = { sender: r.ref_sender, id: r.ref_id };
    }
    return cur;
  }

  /** `sender`'s last content or reply message (not deleted) in the conversation of (sender, id), up to that one. */
  async lastReadable(sender: string, id: string): Promise<{ sender: string; id: string } | null> {
    const at = await this.db.selectFrom('messages').select(['seq', 'conversation_id']).where('sender', '=', sender).where('id', '=', id).executeTakeFirst();
    if (!at) return null;
    const r = await this.db
      .selectFrom('messages')
      .leftJoin('message_state', 'message_state.seq', 'messages.seq')
      .select(['messages.sender', 'messages.id'])
      .where('messages.conversation_id', '=', at.conversation_id)
      .where('messages.sender', '=', sender)
      .where('messages.seq', '<=', at.seq)
      .where('messages.kind', 'in', ['content', 'reply'])
      .where('message_state.deleted_at', 'is', null)
      .orderBy('messages.seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    return r ?? null;
  }

  /** The seq of a stored message, or null. */
  async seqOf(sender: string, id: string): Promise<number | null> {
    const r = await this.db.selectFrom('messages').select('seq').where('sender', '=', sender).where('id', '=', id).executeTakeFirst();
    return r ? Number(r.seq) : null;
  }

  /** The emoji `reactor` currently shows on a message (RFC 9078 sends the whole set each time). */
  async reactionsOf(reactor: string, target: { sender: string; id: string }): Promise<string[]> {
    const rows = await this.db.selectFrom('reactions').select('emoji').where('target_sender', '=', target.sender).where('target_id', '=', target.id).where('reactor', '=', reactor).orderBy('seq').execute();
    return rows.map((r) => r.emoji);
  }

  async groupFor(conversationId: string): Promise<{ groupId: string; name: string | null } | null> {
    const r = await this.db.selectFrom('email_groups').select(['group_id', 'name']).where('conversation_id', '=', conversationId).orderBy('updated_at', 'desc').limit(1).executeTakeFirst();
    return r ? { groupId: r.group_id, name: r.name } : null;
  }

  async group(groupId: string): Promise<{ conversationId: string; name: string | null } | null> {
    const r = await this.db.selectFrom('email_groups').select(['conversation_id', 'name']).where('group_id', '=', groupId).executeTakeFirst();
    return r ? { conversationId: r.conversation_id, name: r.name } : null;
  }

  /** A group is now this conversation (a member change makes a new participant set). */
  async setGroup(groupId: string, conversationId: string, name: string | null): Promise<void> {
    const now = this.clock.now();
    await this.db
      .insertInto('email_groups')
      .values({ group_id: groupId, conversation_id: conversationId, name, updated_at: now })
      .onConflict((oc) => oc.column('group_id').doUpdateSet({ conversation_id: conversationId, name, updated_at: now }))
      .execute();
  }

  async userKey(address: string): Promise<UserKey | null> {
    const r = await this.db.selectFrom('email_keys').selectAll().where('address', '=', address).executeTakeFirst();
    return r ? { address: r.address, fingerprint: r.fingerprint, publicKey: r.public_key, privateKey: r.private_key } : null;
  }

  /** Stores a new key unless one exists (two instances racing keep the first); returns the kept one. */
  async putUserKey(k: UserKey): Promise<UserKey> {
    await this.db
      .insertInto('email_keys')
      .values({ address: k.address, fingerprint: k.fingerprint, public_key: k.publicKey, private_key: k.privateKey, created_at: this.clock.now() })
      .onConflict((oc) => oc.column('address').doNothing())
      .execute();
    return (await this.userKey(k.address))!;
  }

  async allUserKeys(): Promise<UserKey[]> {
    const rows = await this.db.selectFrom('email_keys').selectAll().execute();
    return rows.map((r) => ({ address: r.address, fingerprint: r.fingerprint, publicKey: r.public_key, privateKey: r.private_key }));
  }

  async peerKey(address: string): Promise<PeerKey | null> {
    const r = await this.db.selectFrom('email_peer_keys').selectAll().where('address', '=', address).executeTakeFirst();
    return r ? { address: r.address, fingerprint: r.fingerprint, publicKey: r.public_key, preferEncrypt: r.prefer_encrypt as PeerKey['preferEncrypt'], seenAt: Number(r.seen_at) } : null;
  }

  /** Autocrypt: the newest header wins (by the mail's date, never from the future). */
  async putPeerKey(k: PeerKey): Promise<void> {
    const values = { fingerprint: k.fingerprint, public_key: k.publicKey, prefer_encrypt: k.preferEncrypt, seen_at: k.seenAt };
    await this.db
      .insertInto('email_peer_keys')
      .values({ address: k.address, ...values })
      .onConflict((oc) => oc.column('address').doUpdateSet(values).where('email_peer_keys.seen_at', '<=', k.seenAt))
      .execute();
  }

  // --- mailbox cursor and lease ------------------------------------------------------------------

  async cursor(mailbox: string): Promise<{ uidValidity: number; lastUid: number } | null> {
    const r = await this.db.selectFrom('email_inbound').select(['uid_validity', 'last_uid']).where('mailbox', '=', mailbox).executeTakeFirst();
    return r ? { uidValidity: Number(r.uid_validity), lastUid: Number(r.last_uid) } : null;
  }

  async setCursor(mailbox: string, uidValidity: number, lastUid: number): Promise<void> {
    await this.db
      .insertInto('email_inbound')
      .values({ mailbox, uid_validity: uidValidity, last_uid: lastUid, lease_owner: null, lease_until: null })
      .onConflict((oc) => oc.column('mailbox').doUpdateSet({ uid_validity: uidValidity, last_uid: lastUid }))
      .execute();
  }

  /** Takes or renews the lease on reading a mailbox; false while another instance holds it. */
  async lease(mailbox: string, owner: string, ms: number): Promise<boolean> {
    const now = this.clock.now();
    await this.db
      .insertInto('email_inbound')
      .values({ mailbox, uid_validity: 0, last_uid: 0, lease_owner: null, lease_until: null })
      .onConflict((oc) => oc.column('mailbox').doNothing())
      .execute();
    const res = await this.db
      .updateTable('email_inbound')
      .set({ lease_owner: owner, lease_until: now + ms })
      .where('mailbox', '=', mailbox)
      .where((eb) => eb.or([eb('lease_owner', 'is', null), eb('lease_owner', '=', owner), eb('lease_until', '<', now)]))
      .executeTakeFirst();
    return Number(res.numUpdatedRows) === 1;
  }

  async release(mailbox: string, owner: string): Promise<void> {
    await this.db.updateTable('email_inbound').set({ lease_owner: null, lease_until: null }).where('mailbox', '=', mailbox).where('lease_owner', '=', owner).execute();
  }
}

export async function conversationOf(db: Db, conversationId: string): Promise<{ participants: string[]; title: string | null } | null> {
  const r = await db.selectFrom('conversations').select(['participants', 'title']).where('id', '=', conversationId).executeTakeFirst();
  return r ? { participants: JSON.parse(r.participants) as string[], title: r.title } : null;
}
