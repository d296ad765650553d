import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';

// The seed's callback flow (issue 14, src/indieweb/callback*.ts, docs/indieweb.md):
// * callback_tokens — tokens we issued as a receiver (only their SHA-256 is kept): the six-step
//   flow's per-message secret (flow 'message') and the token variant's token (flow 'session');
// * callback_codes — auth codes we issued as a sender (token variant, step 2), SHA-256 only;
// * callback_held — tokens receivers granted us (step 4), by receiver endpoint, sender domain and
//   message id ('' for a session token of the token variant).
export function callbackFlow(_dialect: Dialect) {
  return {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema
        .createTable('callback_tokens')
        .addColumn('token_hash', 'text', (c) => c.primaryKey())
        .addColumn('flow', 'text', (c) => c.notNull()) // 'message' | 'session'
        .addColumn('domain', 'text', (c) => c.notNull()) // the sender's domain
        .addColumn('message_id', 'text') // flow 'message': the one message it carries
        .addColumn('peer', 'text', (c) => c.notNull()) // the sender's endpoint we called back
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('used_at', 'bigint')
        .addColumn('revoked_at', 'bigint')
        .execute();
      await db.schema.createIndex('callback_tokens_domain').on('callback_tokens').columns(['domain']).execute();
      await db.schema.createIndex('callback_tokens_expires').on('callback_tokens').columns(['expires_at']).execute();
      await db.schema
        .createTable('callback_codes')
        .addColumn('code_hash', 'text', (c) => c.primaryKey())
        .addColumn('domain', 'text', (c) => c.notNull())
        .addColumn('destination', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('used_at', 'bigint')
        .execute();
      await db.schema.createIndex('callback_codes_expires').on('callback_codes').columns(['expires_at']).execute();
      await db.schema
        .createTable('callback_held')
        .addColumn('destination', 'text', (c) => c.notNull())
        .addColumn('domain', 'text', (c) => c.notNull())
        .addColumn('message_id', 'text', (c) => c.notNull()) // '' for a session token
        .addColumn('token', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('callback_held_pk', ['destination', 'domain', 'message_id'])
        .execute();
      await db.schema.createIndex('callback_held_expires').on('callback_held').columns(['expires_at']).execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      await db.schema.dropTable('callback_held').execute();
      await db.schema.dropTable('callback_codes').execute();
      await db.schema.dropTable('callback_tokens').execute();
    },
  };
}
