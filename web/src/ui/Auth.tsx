import { useEffect, useState } from 'preact/hooks';
import { ApiError, NetworkError, Session, publicJson } from '../api';

function authError(err: unknown, mode: 'login' | 'signup'): string {
  if (err instanceof NetworkError) return 'Cannot reach the provider. Check your connection and try again.';
  if (err instanceof ApiError) {
    switch (err.code) {
      case 'invalid_grant':
        return mode === 'login' ? 'Wrong username or password.' : 'Your account was created, but logging in failed. Try logging in.';
      case 'slow_down':
        return `Too many failed attempts. Try again${err.retryAfter ? ` in ${Math.ceil(err.retryAfter / 60)} minutes` : ' later'}.`;
      case 'username_taken':
        return 'That username is taken. Choose another one.';
      case 'registration_closed':
        return 'This provider does not accept new sign-ups.';
      case 'rate_limited':
        return 'Too many sign-ups from your network. Try again later.';
      default:
        return err.message.replace(/^(username|password): /, '').replace(/^./, (c) => c.toUpperCase());
    }
  }
  return String(err);
}

export function Auth({ onSession, notice }: { onSession: (s: Session) => void; notice: string | null }) {
  const [mode, setMode] = useState<'login' | 'signup'>('login');
  const [domain, setDomain] = useState<string | null>(null);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    publicJson<{ domain: string }>('GET', '/healthz').then(
      (r) => setDomain(r.domain),
      () => setDomain(null),
    );
  }, []);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    const name = username.trim();
    if (!name) return setError('Enter your username.');
    if (mode === 'signup' && password.length < 8) return setError('The password needs at least 8 characters.');
    if (!password) return setError('Enter your password.');
    setBusy(true);
    try {
      if (mode === 'signup') await publicJson('POST', '/users', { username: name, password });
      const s = await Session.login(name, password);
      onSession(s);
    } catch (err) {
      setError(authError(err, mode));
      setBusy(false);
    }
  };

  const switchTo = (m: 'login' | 'signup') => {
    setMode(m);
    setError(null);
  };

  return (
    <main class="auth">
      <div class="auth-card">
        <div class="brand">
          <img src="/favicon.svg" alt="" width="48" height="48" />
          <h1>intertalk</h1>
        </div>
        <p class="tagline">Chat with anyone, at any provider{domain ? <> — your address will end in <strong>@{domain}</strong></> : null}.</p>
        {notice && (
          <p class="info" role="status">
            {notice}
          </p>
        )}
        <div class="tabs" role="tablist" aria-label="Account">
          <button type="button" role="tab" id="tab-login" aria-selected={mode === 'login'} aria-controls="auth-form" onClick={() => switchTo('login')}>
            Log in
          </button>
          <button type="button" role="tab" id="tab-signup" aria-selected={mode === 'signup'} aria-controls="auth-form" onClick={() => switchTo('signup')}>
            Sign up
          </button>
        </div>
        <div id="auth-form" role="tabpanel" aria-labelledby={mode === 'login' ? 'tab-login' : 'tab-signup'}>
        <form onSubmit={submit} noValidate aria-label={mode === 'login' ? 'Log in' : 'Sign up'}>
          <label for="username">Username</label>
          <div class="with-suffix">
            <input
              id="username"
              name="username"
              autocomplete="username"
              autocapitalize="none"
              spellcheck={false}
              required
              value={username}
              onInput={(e) => setUsername(e.currentTarget.value)}
            />
            {domain && <span aria-hidden="true">@{domain}</span>}
          </div>
          <label for="password">Password</label>
          <input
            id="password"
            name="password"
            type="password"
            autocomplete={mode === 'login' ? 'current-password' : 'new-password'}
            required
            minLength={mode === 'signup' ? 8 : undefined}
            aria-describedby={mode === 'signup' ? 'password-hint' : undefined}
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
          {mode === 'signup' && (
            <p class="hint" id="password-hint">
              At least 8 characters.
            </p>
          )}
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
          <button class="primary" type="submit" disabled={busy}>
            {mode === 'login' ? 'Log in' : 'Create account'}
          </button>
        </form>
        </div>
      </div>
    </main>
  );
}
