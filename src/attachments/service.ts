// Files sent with messages: uploaded by our users, stored content-addressed (id = SHA-256 hex),
// referenced from rich messages, served only to conversation participants (docs/protocol.md).
import type { Db } from '../storage/db.js';
import type { AttachmentsPort } from '../context.js';
import type { AttachmentRef } from '../protocol/rich.js';
import { HttpError } from '../http/errors.js';

export class Attachments implements AttachmentsPort {
  constructor(
    private readonly db: Db,
    private readonly publicUrl: string,
  ) {}

  url(id: string): string {
    return `${this.publicUrl}/attachments/${id}`;
  }

  async describe(uploader: string, refs: Array<{ id: string; name?: string }>): Promise<AttachmentRef[]> {
    const out: AttachmentRef[] = [];
    for (const r of refs) {
      const row = await this.db.selectFrom('attachments').select(['id', 'media_type', 'size']).where('id', '=', r.id).where('uploader', '=', uploader).executeTakeFirst();
      if (!row) throw new HttpError(400, 'unknown_attachment', `attachments: ${r.id.slice(0, 16)}… is not one of your uploads`);
      out.push({ id: row.id, name: r.name ?? 'file', mediaType: row.media_type, size: Number(row.size), url: this.url(row.id) });
    }
    return out;
  }

  plainLink(a: AttachmentRef): string {
    return a.url;
  }
}
