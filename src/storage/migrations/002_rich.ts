import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';

// Rich conversations (docs/protocol.md): message kinds and references, edit/delete state,
// reactions, conversation names, receipts of remote participants, user settings, attachments.
export function rich(_dialect: Dialect) {
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

      // Read receipts of every participant (ours and remote), by message id: seq is local.
      await db.schema
        .createTable('receipts')
        .addColumn('conversation_id', 'text', (c) => c.notNull().references('conversations.id').onDelete('cascade'))
        .addColumn('address', 'text', (c) => c.notNull())
        .addColumn('message_sender', 'text', (c) => c.notNull())
        .addColumn('message_id', 'text', (c) => c.notNull())
        .addColumn('message_seq', 'bigint')
        .addColumn('read_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('receipts_pk', ['conversation_id', 'address'])
        .execute();

      await db.schema
        .createTable('user_settings')
        .addColumn('user_id', 'bigint', (c) => c.primaryKey().references('users.id').onDelete('cascade'))
        .addColumn('send_read_receipts', 'integer', (c) => c.notNull().defaultTo(1))
        .execute();

      // Content-addressed files: id = SHA-256 (hex) of the bytes.
      await db.schema
        .createTable('attachments')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('media_type', 'text', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('uploader', 'text', (c) => c.notNull())
        .addColumn('origin', 'text', (c) => c.notNull()) // 'local' or the peer domain it came from
        .addColumn('complete', 'integer', (c) => c.notNull().defaultTo(1))
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
    },
    async down(): Promise<void> {
      throw new Error('downgrades are not supported');
    },
  };
}
