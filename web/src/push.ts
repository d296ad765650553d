// Web Push in the browser (docs/push.md): registers the service worker (/sw.js), subscribes with
// the provider's VAPID key, hands the subscription to the provider (PUT /push/subscriptions/:id)
// and confirms the validation push that the service worker passes on; turns pushes off again, and
// mutes conversations.
import type { Session } from './api.js';

export type PushState = 'unsupported' | 'off' | 'subscribing' | 'on' | 'error';

const ID_KEY = 'intertalk.push.id';

function b64urlToBytes(s: string): Uint8Array {
  const pad = '='.repeat((4 - (s.length % 4)) % 4);
  const bin = atob((s + pad).replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function bytesToB64url(b: ArrayBuffer | null): string {
  if (!b) return '';
  return btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function pushSupported(): boolean {
  return typeof navigator !== 'undefined' && 'serviceWorker' in navigator && typeof window !== 'undefined' && 'PushManager' in window && typeof Notification !== 'undefined';
}

export class WebPushClient {
  state: PushState = 'off';
  error: string | null = null;
  muted = new Set<string>();
  private registration: ServiceWorkerRegistration | null = null;

  constructor(
    private readonly session: Session,
    private readonly changed: () => void,
  ) {
    if (!pushSupported()) this.state = 'unsupported';
  }

  /** Registers the service worker and learns whether this browser is subscribed, and the mutes. */
  async init(): Promise<void> {
    try {
      const s = await this.session.request<{ enabled: boolean; mutedConversations: string[] }>('GET', '/push/settings');
      this.muted = new Set(s.mutedConversations);
    } catch {
      this.state = 'unsupported'; // push is not enabled on this provider
      this.changed();
      return;
    }
    if (this.state === 'unsupported') return this.changed();
    navigator.serviceWorker.addEventListener('message', (e: MessageEvent) => {
      const d = e.data as { type?: string; validation?: string } | null;
      if (d && d.type === 'intertalk-push-validation' && typeof d.validation === 'string') void this.confirm(d.validation);
    });
    this.registration = await navigator.serviceWorker.register('/sw.js', { scope: '/' });
    const sub = await this.registration.pushManager.getSubscription();
    const id = localStorage.getItem(ID_KEY);
    this.state = sub && id ? 'on' : 'off';
    this.changed();
  }

  private subscriptionId(): string {
    let id = localStorage.getItem(ID_KEY);
    if (!id || !/^[0-9A-Za-z_-]{10,36}$/.test(id)) {
      id = crypto.randomUUID();
      localStorage.setItem(ID_KEY, id);
    }
    return id;
  }

  /** Asks for permission, subscribes at the browser's push service and registers with the provider. */
  async enable(): Promise<void> {
    if (this.state === 'unsupported') return;
    this.state = 'subscribing';
    this.error = null;
    this.changed();
    try {
      if ((await Notification.requestPermission()) !== 'granted') throw new Error('notifications are blocked for this site');
      const reg = this.registration ?? (await navigator.serviceWorker.register('/sw.js', { scope: '/' }));
      this.registration = reg;
      const { publicKey } = await this.session.request<{ publicKey: string }>('GET', '/push/vapid');
      const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64urlToBytes(publicKey) as BufferSource });
      await this.session.request('PUT', `/push/subscriptions/${this.subscriptionId()}`, {
        json: {
          client: 'intertalk web',
          device: navigator.userAgent.slice(0, 120),
          msgtype: 'chat',
          resource: { endpoint: sub.endpoint, keys: { p256dh: bytesToB64url(sub.getKey('p256dh')), auth: bytesToB64url(sub.getKey('auth')) } },
        },
      });
      await this.session.request('PUT', '/push/settings', { json: { enabled: true } });
      this.state = 'on';
    } catch (err) {
      this.state = 'error';
      this.error = err instanceof Error ? err.message : String(err);
    }
    this.changed();
  }

  private async confirm(validation: string): Promise<void> {
    const id = localStorage.getItem(ID_KEY);
    if (!id) return;
    try {
      await this.session.request('POST', `/push/subscriptions/${id}/validate`, { json: { validation } });
    } catch (err) {
      this.state = 'error';
      this.error = err instanceof Error ? err.message : String(err);
      this.changed();
    }
  }

  /** Turns pushes off for this browser: unsubscribes and deletes the subscription at the provider. */
  async disable(): Promise<void> {
    const id = localStorage.getItem(ID_KEY);
    try {
      const sub = await this.registration?.pushManager.getSubscription();
      await sub?.unsubscribe();
      if (id) await this.session.request('DELETE', `/push/subscriptions/${id}`).catch(() => undefined);
    } finally {
      localStorage.removeItem(ID_KEY);
      this.state = 'off';
      this.changed();
    }
  }

  async setMuted(conversationId: string, muted: boolean): Promise<void> {
    await this.session.request('PUT', `/conversations/${conversationId}/push`, { json: { muted } });
    if (muted) this.muted.add(conversationId);
    else this.muted.delete(conversationId);
    this.changed();
  }
}
