import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';

// Rooms hosted here (docs/rooms.md): the room and its policy, membership state, the room's
// ordered log (seq per room), invite codes and bans.
export function rooms(_dialect: Dialect) {
  return {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema
        .createTable('rooms')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('visibility', 'text', (c) => c.notNull())
        .addColumn('history', 'text', (c) => c.notNull())
        .addColumn('title', 'text')
        .addColumn('topic', 'text')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('last_seq', 'bigint', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema
        .createTable('room_members')
        .addColumn('room', 'text', (c) => c.notNull().references('rooms.name').onDelete('cascade'))
        .addColumn('address', 'text', (c) => c.notNull())
        .addColumn('role', 'text', (c) => c.notNull())
        .addColumn('joined_at', 'bigint', (c) => c.notNull())
        // The room's last_seq when the member joined: with history "join" they see seq > this.
        .addColumn('joined_seq', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('room_members_pk', ['room', 'address'])
        .execute();
      await db.schema
        .createTable('room_messages')
        .addColumn('room', 'text', (c) => c.notNull().references('rooms.name').onDelete('cascade'))
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('sender', 'text', (c) => c.notNull())
        .addColumn('sent_at', 'text', (c) => c.notNull())
        .addColumn('sent_ms', 'bigint', (c) => c.notNull())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('removed_at', 'bigint')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('room_messages_pk', ['room', 'seq'])
        .addUniqueConstraint('room_messages_sender_id', ['room', 'sender', 'id'])
        .execute();
      await db.schema.createIndex('room_messages_sent').on('room_messages').columns(['room', 'sent_ms']).execute();
      await db.schema
        .createTable('room_invites')
        .addColumn('code', 'text', (c) => c.primaryKey())
        .addColumn('room', 'text', (c) => c.notNull().references('rooms.name').onDelete('cascade'))
        .addColumn('uses_left', 'integer')
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('room_bans')
        .addColumn('room', 'text', (c) => c.notNull().references('rooms.name').onDelete('cascade'))
        // An address (user@domain) or a whole domain.
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('room_bans_pk', ['room', 'subject'])
        .execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      for (const t of ['room_bans', 'room_invites', 'room_messages', 'room_members', 'rooms']) await db.schema.dropTable(t).execute();
    },
  };
}
