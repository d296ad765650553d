import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';

// Rich conversations (docs/protocol.md): message kinds and references, edit/delete state,
// reactions, conversation names, receipts of remote participants, user settings, attachments.
export function rich(dialect: Dialect) {
  return {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.alterTable('messages').addColumn('kind', 'text', (c) => c.notNull().defaultTo('content')).execute();
      await db.schema.alterTable('messages').addColumn('ref_sender', 'text').execute();
      await db.schema.alterTable('messages').addColumn('ref_id', 'text').execute();
      await db.schema.createIndex('messages_ref').on('messages').columns(['ref_sender', 'ref_id']).execute();

      // Current state of a content message that was edited or deleted (messages stay immutable
      // rows; a delete also scrubs their text: see Messaging.applyDelete).
      await db.schema
        .createTable('message_state')
        .addColumn('seq', 'bigint', (c) => c.primaryKey().references('messages.seq').onDelete('cascade'))
        .addColumn('text', 'text')
        .addColumn('formatted', 'text')
        .addColumn('format', 'text')
        .addColumn('edit_count', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('last_edit_seq', 'bigint')
        .addColumn('edited_at', 'text')
        .addColumn('deleted_at', 'text')
        .execute();

      await db.schema
        .createTable('reactions')
        .addColumn('conversation_id', 'text', (c) => c.notNull().references('conversations.id').onDelete('cascade'))
        .addColumn('target_sender', 'text', (c) => c.notNull())
        .addColumn('target_id', 'text', (c) => c.notNull())
        .addColumn('reactor', 'text', (c) => c.notNull())
        .addColumn('emoji', 'text', (c) => c.notNull())
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('reactions_pk', ['target_sender', 'target_id', 'reactor', 'emoji'])
        .execute();
      await db.schema.createIndex('reactions_conversation').on('reactions').column('conversation_id').execute();

      await db.schema.alterTable('conversations').addColumn('title', 'text').execute();
      await db.schema.alterTable('conversations').addColumn('title_seq', 'bigint').execute();
      // Which rename wins is decided the same way on every provider: latest sentAt, then the
      // larger "sender\nid" — not local arrival order, which differs between providers.
      await db.schema.alterTable('conversations').addColumn('title_at', 'bigint').execute();
      await db.schema.alterTable('conversations').addColumn('title_key', 'text').execute();

      // Read receipts of every participant (ours and remote), by message id: seq is local.
      // `shared` = 0: one of our users read with receipts turned off; kept, shown to nobody.
      await db.schema
        .createTable('receipts')
        .addColumn('conversation_id', 'text', (c) => c.notNull().references('conversations.id').onDelete('cascade'))
        .addColumn('address', 'text', (c) => c.notNull())
        .addColumn('message_sender', 'text', (c) => c.notNull())
        .addColumn('message_id', 'text', (c) => c.notNull())
        .addColumn('message_seq', 'bigint')
        .addColumn('read_at', 'bigint', (c) => c.notNull())
        .addColumn('shared', 'integer', (c) => c.notNull().defaultTo(1))
        .addPrimaryKeyConstraint('receipts_pk', ['conversation_id', 'address'])
        .execute();

      await db.schema
        .createTable('user_settings')
        .addColumn('user_id', 'bigint', (c) => c.primaryKey().references('users.id').onDelete('cascade'))
        .addColumn('send_read_receipts', 'integer', (c) => c.notNull().defaultTo(1))
        .execute();

      // Content-addressed files: id = SHA-256 (hex) of the bytes, which live here too (every
      // instance of the provider serves them). A row exists only once its bytes are stored.
      await db.schema
        .createTable('attachments')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('media_type', 'text', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('uploader', 'text', (c) => c.notNull())
        .addColumn('origin', 'text', (c) => c.notNull()) // 'local' or the peer domain it came from
        .addColumn('complete', 'integer', (c) => c.notNull().defaultTo(1))
        // Last upload or send of these bytes: blobs without refs are purged an hour after it.
        .addColumn('touched_at', 'bigint', (c) => c.notNull())
        // 1 once a stored message referenced it (and not touched since): purged as soon as no
        // ref remains (a delete), not an hour later.
        .addColumn('referenced', 'integer', (c) => c.notNull().defaultTo(0))
        // Last, so SQLite reads the other columns without walking the blob's overflow pages.
        .addColumn('data', dialect === 'postgres' ? 'bytea' : 'blob', (c) => c.notNull())
        .execute();
      // Who uploaded which file (the same bytes from two users are stored once): the uploader
      // may send and download it; the per-user daily quota counts these rows.
      await db.schema
        .createTable('attachment_uploads')
        .addColumn('attachment_id', 'text', (c) => c.notNull())
        .addColumn('uploader', 'text', (c) => c.notNull())
        .addColumn('media_type', 'text', (c) => c.notNull())
        .addColumn('name', 'text')
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('attachment_uploads_pk', ['attachment_id', 'uploader'])
        .execute();
      await db.schema.createIndex('attachment_uploads_uploader').on('attachment_uploads').columns(['uploader', 'created_at']).execute();
      // Files of peers' messages: fetched from the sending provider (in the background, retried,
      // or on demand). state 'done' also proves that peer holds the bytes, which is what lets our
      // users download our copy through that peer's messages.
      await db.schema
        .createTable('attachment_fetches')
        .addColumn('attachment_id', 'text', (c) => c.notNull())
        .addColumn('domain', 'text', (c) => c.notNull())
        .addColumn('url', 'text', (c) => c.notNull())
        .addColumn('media_type', 'text', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('sender', 'text', (c) => c.notNull())
        .addColumn('recipient', 'text', (c) => c.notNull()) // one of our users: `sub` of our token
        .addColumn('state', 'text', (c) => c.notNull()) // pending | done | failed
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
        .addColumn('lease_until', 'bigint')
        .addColumn('last_error', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('fetched_at', 'bigint')
        .addPrimaryKeyConstraint('attachment_fetches_pk', ['attachment_id', 'domain'])
        .execute();
      await db.schema.createIndex('attachment_fetches_due').on('attachment_fetches').columns(['state', 'next_attempt_at']).execute();
      // The HMAC secret of capability links (plain peers' recipients), created once.
      await db.schema
        .createTable('attachment_link_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('secret', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      // Which conversations an attachment was sent in: access control for downloads.
      await db.schema
        .createTable('attachment_refs')
        .addColumn('attachment_id', 'text', (c) => c.notNull())
        .addColumn('conversation_id', 'text', (c) => c.notNull().references('conversations.id').onDelete('cascade'))
        .addColumn('message_seq', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('attachment_refs_pk', ['attachment_id', 'conversation_id', 'message_seq'])
        .execute();
      await db.schema.createIndex('attachment_refs_conversation').on('attachment_refs').column('conversation_id').execute();
      await db.schema.createIndex('attachment_refs_message').on('attachment_refs').column('message_seq').execute();
    },
    async down(): Promise<void> {
      throw new Error('downgrades are not supported');
    },
  };
}
