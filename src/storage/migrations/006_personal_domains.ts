import type { Kysely } from 'kysely';
import type { Dialect } from '../db.js';

// Personal domains (issue 14, src/indieweb/, docs/indieweb.md): a domain attached to one account,
// verified by discovery (its home page names this provider), re-checked periodically.
export function personalDomains(_dialect: Dialect) {
  return {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema
        .createTable('personal_domains')
        .addColumn('domain', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'bigint', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('state', 'text', (c) => c.notNull()) // 'pending' | 'verified' | 'failed'
        .addColumn('step', 'text') // the failing discovery step, or 'wrong_server'
        .addColumn('message', 'text')
        .addColumn('server', 'text') // the server the home page names, when found
        .addColumn('via', 'text') // link-header | html | metadata
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('checked_at', 'bigint')
        .addColumn('verified_at', 'bigint')
        .addColumn('next_check_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('personal_domains_user').on('personal_domains').columns(['user_id']).execute();
      await db.schema.createIndex('personal_domains_due').on('personal_domains').columns(['next_check_at']).execute();
    },
    async down(db: Kysely<any>): Promise<void> {
      await db.schema.dropTable('personal_domains').execute();
    },
  };
}
