import { sql, type Kysely } from 'kysely';
import type { Dialect } from '../db.js';

// Web Push (src/push/, docs/push.md): the provider's VAPID key pair (one row, shared by every
// instance), the users' push subscriptions (COI WebPush), the durable queue of pushes to send,
// per-conversation mutes and per-user push settings.
export function push(dialect: Dialect) {
  const autoId = dialect === 'postgres' ? sql.raw('bigserial') : sql.raw('integer');
  return {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema
        .createTable('push_vapid')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('public_key', 'text', (c) => c.notNull())
        .addColumn('private_key', 'text', (c) => c.notNull())
        // HMAC key for the validation values sent in validation pushes.
        .addColumn('validation_secret', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('push_subscriptions')
        .addColumn('user_id', 'bigint', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('client', 'text', (c) => c.notNull())
        .addColumn('device', 'text', (c) => c.notNull())
        .addColumn('msgtype', 'text', (c) => c.notNull())
        .addColumn('endpoint', 'text', (c) => c.notNull())
        .addColumn('p256dh', 'text', (c) => c.notNull())
        .addColumn('auth', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('validated', 'integer', (c) => c.notNull().defaultTo(0))
        // Unvalidated subscriptions are discarded after this time.
        .addColumn('validate_by', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('push_subscriptions_pk', ['user_id', 'id'])
        .execute();
      await db.schema.createIndex('push_subscriptions_validate_by').on('push_subscriptions').columns(['validated', 'validate_by']).execute();

      await db.schema
        .createTable('push_queue')
        .addColumn('id', autoId, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
        .addColumn('user_id', 'bigint', (c) => c.notNull())
        .addColumn('subscription_id', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull()) // 'validation' | 'message'
        .addColumn('message_seq', 'bigint', (c) => c.notNull()) // 0 for validation pushes
        .addColumn('conversation_id', 'text')
        .addColumn('payload', 'text', (c) => c.notNull()) // plaintext JSON; encrypted when sent
        .addColumn('ttl', 'integer', (c) => c.notNull())
        .addColumn('urgency', 'text', (c) => c.notNull())
        .addColumn('topic', 'text')
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
        .addColumn('last_error', 'text')
        .addColumn('lease_owner', 'text')
        .addColumn('lease_until', 'bigint')
        .execute();
      // Every instance hears each message on the bus: the first insert wins, the others are no-ops.
      await db.schema.createIndex('push_queue_once').on('push_queue').columns(['user_id', 'subscription_id', 'kind', 'message_seq']).unique().execute();
      await db.schema.createIndex('push_queue_due').on('push_queue').columns(['next_attempt_at']).execute();

      await db.schema
        .createTable('push_mutes')
        .addColumn('user_id', 'bigint', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('conversation_id', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('push_mutes_pk', ['user_id', 'conversation_id'])
        .execute();

      await db.schema
        .createTable('push_settings')
        .addColumn('user_id', 'bigint', (c) => c.primaryKey().references('users.id').onDelete('cascade'))
        .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('content_free', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      for (const t of ['push_settings', 'push_mutes', 'push_queue', 'push_subscriptions', 'push_vapid']) await db.schema.dropTable(t).execute();
    },
  };
}
