// Personal domains (issue 14, docs/indieweb.md): attach a domain you own, see exactly what to
// publish on its home page, and the result of the last check — naming the failing step.
import { useEffect, useState } from 'preact/hooks';
import { describe, type Chat } from '../store';
import { Dialog, FormFooter } from './common';

interface Publish {
  profile: string;
  server: string;
  linkElement: string;
  linkHeader: string;
  metadata: { linkElement: string; path: string; document: { server: string } };
}

interface PersonalDomain {
  domain: string;
  address: string;
  state: 'pending' | 'verified' | 'failed';
  step: string | null;
  message: string | null;
  server: string | null;
  via: string | null;
  checkedAt: string | null;
  publish: Publish;
}

/** What each failing step means, for people. */
const STEPS: Record<string, string> = {
  bad_url: 'the domain is not a usable home page address',
  home_unreachable: 'the home page could not be fetched',
  home_status: 'the home page did not answer 200',
  no_link: 'the home page has no link to a server',
  metadata_unreachable: 'the metadata document could not be fetched',
  metadata_invalid: 'the metadata document names no server',
  wrong_server: 'the home page names another server',
};

export function DomainsDialog({ chat, onClose }: { chat: Chat; onClose: () => void }) {
  const [domains, setDomains] = useState<PersonalDomain[] | null>(null);
  const [name, setName] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = async () => {
    try {
      const r = await chat.session.request<{ domains: PersonalDomain[] }>('GET', '/me/domains');
      setDomains(r.domains);
    } catch (err) {
      setError(describe(err));
    }
  };
  useEffect(() => void load(), []);

  const check = async (domain: string) => {
    setError(null);
    setBusy(true);
    try {
      await chat.session.request('PUT', `/me/domains/${encodeURIComponent(domain)}`);
      setName('');
      await load();
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  };
  const detach = async (domain: string) => {
    setError(null);
    try {
      await chat.session.request('DELETE', `/me/domains/${encodeURIComponent(domain)}`);
      await load();
    } catch (err) {
      setError(describe(err));
    }
  };

  return (
    <Dialog id="personal-domains" title="Personal domains" onClose={onClose}>
      <p class="hint">Use a domain you own as your address: publish one of the lines shown on its home page, then check it.</p>
      {domains === null && !error && <p class="muted">Loading…</p>}
      <ul class="domain-list">
        {(domains ?? []).map((d) => (
          <li key={d.domain}>
            <p>
              <strong>{d.address}</strong> — {d.state === 'verified' ? 'verified' : d.state === 'pending' ? 'not checked yet' : 'not verified'}
              {d.via && d.state === 'verified' ? ` (found in the ${d.via})` : ''}
            </p>
            {d.state === 'failed' && (
              <p class="error" role="status">
                Failing step: {d.step ? `${d.step} — ${STEPS[d.step] ?? ''}` : 'unknown'}
                {d.message ? `. ${d.message}` : ''}
              </p>
            )}
            {d.state !== 'verified' && (
              <details open>
                <summary>What to publish on {d.publish.profile} (any one)</summary>
                <p>In the page’s &lt;head&gt;:</p>
                <pre>{d.publish.linkElement}</pre>
                <p>Or an HTTP header:</p>
                <pre>{d.publish.linkHeader}</pre>
                <p>Or a metadata document at {d.publish.metadata.path}:</p>
                <pre>{`${d.publish.metadata.linkElement}\n${JSON.stringify(d.publish.metadata.document)}`}</pre>
              </details>
            )}
            <div class="dialog-buttons">
              <button type="button" disabled={busy} onClick={() => void check(d.domain)}>
                Check again
              </button>
              <button type="button" onClick={() => void detach(d.domain)}>
                Detach
              </button>
            </div>
          </li>
        ))}
      </ul>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (name.trim()) void check(name.trim());
        }}
        noValidate
      >
        <label for="domain-name">Attach a domain</label>
        <input id="domain-name" autocomplete="off" autocapitalize="none" spellcheck={false} placeholder="alice.example" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        <FormFooter error={error} busy={busy} disabled={!name.trim()} submit="Attach and check" busyLabel="Checking…" onClose={onClose} closeLabel="Close" />
      </form>
    </Dialog>
  );
}
