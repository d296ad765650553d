// The intertalk service worker (docs/push.md): receives Web Push messages while no tab is open.
// A validation push (COI WebPush) is handed to the open tabs, which confirm it with the provider
// (the worker holds no credentials); a message push shows a notification; a click on it opens
// (or focuses) the app at the conversation.
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  event.waitUntil(
    (async () => {
      const tabs = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      if (typeof data.validation === 'string') {
        for (const t of tabs) t.postMessage({ type: 'intertalk-push-validation', validation: data.validation });
        return;
      }
      if (data.type !== 'message') return;
      // A tab in front shows the message itself.
      if (tabs.some((t) => t.visibilityState === 'visible' && t.focused)) return;
      const from = typeof data['from-email'] === 'string' ? data['from-email'] : null;
      const title = from ? from : 'New message';
      const body = typeof data.content === 'string' ? data.content.slice(0, 300) : 'You have a new message';
      await self.registration.showNotification(title, {
        body,
        tag: data.conversation,
        data: { conversation: data.conversation },
      });
    })(),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const conv = event.notification.data && event.notification.data.conversation;
  const target = new URL(conv && /^c[A-Za-z0-9_-]{43}$/.test(conv) ? `/#/c/${conv}` : '/', self.location.origin).href;
  event.waitUntil(
    (async () => {
      const tabs = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      for (const t of tabs) {
        if (new URL(t.url).origin === self.location.origin) {
          await t.focus();
          if ('navigate' in t) await t.navigate(target).catch(() => undefined);
          return;
        }
      }
      await self.clients.openWindow(target);
    })(),
  );
});
