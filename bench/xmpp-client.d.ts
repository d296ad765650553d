// The part of @xmpp/client (which ships no types) the benchmark uses.
declare module '@xmpp/client' {
  export interface Element {
    name: string;
    attrs: Record<string, string>;
    is(name: string): boolean;
    getChildText(name: string): string | null;
    toString(): string;
  }
  export interface Client {
    start(): Promise<unknown>;
    stop(): Promise<unknown>;
    send(el: Element): Promise<void>;
    on(event: 'stanza', fn: (el: Element) => void): void;
    on(event: 'error', fn: (err: Error) => void): void;
  }
  export function client(options: { service: string; domain: string; username?: string; password?: string; resource?: string; credentials?: (authenticate: (c: { username: string; password: string }, mechanism: string) => Promise<void>, mechanisms: string[]) => Promise<void> }): Client;
  export function xml(name: string, attrs?: Record<string, string>, ...children: Array<Element | string>): Element;
}
