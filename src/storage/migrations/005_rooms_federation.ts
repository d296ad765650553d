import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';

// Rooms across providers (docs/rooms.md, "Federation"). Host side: the signed form (JWS) of each
// room message, to relay as it is, and one delivery cursor per (room, member provider): the last
// room seq that provider took, with its back-off. Member side: our users' memberships of rooms
// hosted elsewhere and the mirror of those rooms' messages as the hosts delivered them.
export function roomsFederation(_dialect: Dialect) {
  return {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.alterTable('room_messages').addColumn('jws', 'text').execute();
      await db.schema
        .createTable('room_deliveries')
        .addColumn('room', 'text', (c) => c.notNull().references('rooms.name').onDelete('cascade'))
        .addColumn('domain', 'text', (c) => c.notNull())
        // The last room seq this provider acknowledged (2xx) or that was skipped for it.
        .addColumn('last_seq', 'bigint', (c) => c.notNull())
        .addColumn('failures', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('next_attempt_at', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('last_error', 'text')
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        // Which instance delivers this cursor now (several instances share one database).
        .addColumn('lease_owner', 'text')
        .addColumn('lease_until', 'bigint')
        .addPrimaryKeyConstraint('room_deliveries_pk', ['room', 'domain'])
        .execute();
      await db.schema
        .createTable('remote_room_members')
        // The room's address, name#host.
        .addColumn('room', 'text', (c) => c.notNull())
        .addColumn('address', 'text', (c) => c.notNull())
        // The room's last seq when the host admitted the member (its answer's lastSeq).
        .addColumn('joined_seq', 'bigint', (c) => c.notNull())
        .addColumn('joined_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('remote_room_members_pk', ['room', 'address'])
        .execute();
      await db.schema.createIndex('remote_room_members_address').on('remote_room_members').columns(['address']).execute();
      await db.schema
        .createTable('remote_room_messages')
        .addColumn('room', 'text', (c) => c.notNull())
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('sender', 'text', (c) => c.notNull())
        .addColumn('sent_ms', 'bigint', (c) => c.notNull())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('jws', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('remote_room_messages_pk', ['room', 'seq'])
        .execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      for (const t of ['remote_room_messages', 'remote_room_members', 'room_deliveries']) await db.schema.dropTable(t).execute();
      await db.schema.alterTable('room_messages').dropColumn('jws').execute();
    },
  };
}
