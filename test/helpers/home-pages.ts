// Home pages of personal domains for the tests: one plain-HTTP server on loopback answering for
// every site by its Host header, with pages the test sets (and changes) per site and path.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Page = { status?: number; headers?: Record<string, string>; body?: string };

/** A home page whose <head> holds `head`. */
export const html = (head: string): Page => ({ headers: { 'content-type': 'text/html; charset=utf-8' }, body: `<!doctype html><html><head>${head}</head><body><p>home</p></body></html>` });

export interface HomePages {
  /** host → path → page; unknown ones are 404. */
  sites: Map<string, Record<string, Page>>;
  port: number;
  close(): Promise<void>;
}

export async function startHomePages(): Promise<HomePages> {
  const sites = new Map<string, Record<string, Page>>();
  const web = http.createServer((req, res) => {
    const host = String(req.headers.host ?? '').split(':')[0]!.toLowerCase();
    const page = sites.get(host)?.[(req.url ?? '/').split('?')[0]!];
    if (!page) return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    res.writeHead(page.status ?? 200, page.headers ?? {}).end(page.body ?? '');
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  return { sites, port: (web.address() as AddressInfo).port, close: () => {
      web.closeAllConnections();
      return new Promise<void>((r) => web.close(() => r()));
    } };
}
