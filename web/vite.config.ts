// Builds the web client (web/) into dist/web, which every provider serves at "/"
// (src/web/static.ts). `npm run build` (and so `npm install`, through `prepare`) runs it.
//
// Development: start a provider (`npm start`, http://127.0.0.1:8080), then
// `npx vite --config web/vite.config.ts`; the dev server proxies the API and the WebSocket to it
// (INTERTALK_DEV_PROVIDER overrides the address).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import preact from '@preact/preset-vite';

const root = fileURLToPath(new URL('.', import.meta.url));
const provider = process.env.INTERTALK_DEV_PROVIDER ?? 'http://127.0.0.1:8080';
const api = ['/users', '/token', '/revoke', '/logout', '/me', '/conversations', '/attachments', '/healthz', '/.well-known'];

export default defineConfig({
  root,
  base: '/',
  plugins: [preact({ devToolsEnabled: false, prefreshEnabled: false })],
  build: {
    outDir: fileURLToPath(new URL('../dist/web', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    // No data: URLs or inline scripts: everything is a file under /assets, allowed by the CSP.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      ...Object.fromEntries(api.map((p) => [p, { target: provider, changeOrigin: true }])),
      '/messages': { target: provider, changeOrigin: true, ws: true },
    },
  },
});
