import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';

// The e-mail bridge (issue 11, src/bridges/email/, docs/email.md):
// * email_messages — every Message-ID the bridge sent or stored, with the intertalk message it is
//   (sender, id) in which conversation, so replies, edits, deletes, reactions and receipts that
//   name a Message-ID find their message, and our own mail is never bridged back;
// * email_groups — a Chat-Group-ID and the conversation it currently is (a member change makes a
//   new participant set, so a new conversation);
// * email_keys — our users' Autocrypt keys (OpenPGP, armored);
// * email_peer_keys — what we last saw in a correspondent's Autocrypt header;
// * email_inbound — how far each mailbox has been read (UIDVALIDITY, last UID) and which instance
//   reads it (a lease, so two instances never read one mailbox).
export function email(_dialect: Dialect) {
  return {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema
        .createTable('email_messages')
        .addColumn('message_id', 'text', (c) => c.primaryKey())
        .addColumn('conversation_id', 'text', (c) => c.notNull())
        .addColumn('sender', 'text', (c) => c.notNull())
        .addColumn('msg_id', 'text', (c) => c.notNull())
        .addColumn('direction', 'text', (c) => c.notNull()) // 'out' | 'in'
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('email_messages_msg').on('email_messages').columns(['sender', 'msg_id']).execute();
      await db.schema
        .createTable('email_groups')
        .addColumn('group_id', 'text', (c) => c.primaryKey())
        .addColumn('conversation_id', 'text', (c) => c.notNull())
        .addColumn('name', 'text')
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('email_groups_conversation').on('email_groups').columns(['conversation_id']).execute();
      await db.schema
        .createTable('email_keys')
        .addColumn('address', 'text', (c) => c.primaryKey())
        .addColumn('fingerprint', 'text', (c) => c.notNull())
        .addColumn('public_key', 'text', (c) => c.notNull())
        .addColumn('private_key', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('email_peer_keys')
        .addColumn('address', 'text', (c) => c.primaryKey())
        .addColumn('fingerprint', 'text', (c) => c.notNull())
        .addColumn('public_key', 'text', (c) => c.notNull())
        .addColumn('prefer_encrypt', 'text', (c) => c.notNull())
        .addColumn('seen_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('email_inbound')
        .addColumn('mailbox', 'text', (c) => c.primaryKey())
        .addColumn('uid_validity', 'bigint', (c) => c.notNull())
        .addColumn('last_uid', 'bigint', (c) => c.notNull())
        .addColumn('lease_owner', 'text')
        .addColumn('lease_until', 'bigint')
        .execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      for (const t of ['email_inbound', 'email_peer_keys', 'email_keys', 'email_groups', 'email_messages']) await db.schema.dropTable(t).execute();
    },
  };
}
