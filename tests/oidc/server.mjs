// Loopback OpenID Connect provider for QNP tests (Google-like and Apple-like clients).
//
// Real `oidc-provider` (certified OP) on http://127.0.0.1:PORT; interactions are auto-approved
// for the user named by the `login_hint` authorization parameter, so a cookie-keeping HTTP
// client completes the flow without a browser. Apple's ES256 client-secret JWT is checked by a
// Koa middleware in front of the provider's /token route. See README.md beside this file.
//
// Prints exactly one line to stdout once ready: `oidc listening on http://127.0.0.1:PORT`.
import * as http from 'node:http';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';

import * as jose from 'jose';

// oidc-provider prints "Unsupported runtime. Use Node.js v22.x LTS" at import time on Node 20
// (it works on 20). That one notice is dropped; every other warning still reaches stderr.
const consoleWarn = console.warn;
console.warn = (...args) => {
  if (typeof args[0] === 'string' && args[0].includes('Unsupported runtime')) return;
  consoleWarn(...args);
};
const { default: Provider, interactionPolicy } = await import('oidc-provider');
console.warn = consoleWarn;

const env = (name, dflt) => (process.env[name] === undefined || process.env[name] === '' ? dflt : process.env[name]);
const list = (value) => (value ? value.split(',').map((s) => s.trim()).filter(Boolean) : []);

const GOOGLE_CLIENT_ID = env('GOOGLE_CLIENT_ID', 'google-test-client');
const GOOGLE_CLIENT_SECRET = env('GOOGLE_CLIENT_SECRET', 'google-test-secret');
const GOOGLE_REDIRECT_URIS = list(env('GOOGLE_REDIRECT_URIS', 'http://127.0.0.1:9/cb'));
const APPLE_CLIENT_ID = env('APPLE_CLIENT_ID', 'apple-test-client');
const APPLE_REDIRECT_URIS = list(env('APPLE_REDIRECT_URIS', 'http://127.0.0.1:9/cb'));
const APPLE_REGISTERED_SECRET = env('APPLE_REGISTERED_SECRET', 'apple-registered-secret');
const APPLE_KEY_ID = env('APPLE_KEY_ID', 'TESTKEY001');
const APPLE_TEAM_ID = env('APPLE_TEAM_ID', 'TESTTEAM01');
// PEM may come with literal "\n" sequences when passed through a single-line env.
const APPLE_PUBLIC_KEY_PEM = env('APPLE_PUBLIC_KEY_PEM', '').replace(/\\n/g, '\n');
const APPLE_MAX_SECRET_LIFETIME = 15777000; // seconds, Apple's "6 months" limit

// Test users, keyed by login_hint. accountId (and the ID token `sub`) is `sub`.
// OIDC_EXTRA_USERS='{"carol":{"sub":"s","email":"c@x","email_verified":false,"name":"C"}}' adds more.
const USERS = {
  alice: { sub: 'google-sub-alice', email: 'alice@example.com', email_verified: true, name: 'Alice Example' },
  bob: { sub: 'google-sub-bob', email: 'bob@example.com', email_verified: true, name: 'Bob Example' },
  relay: { sub: 'apple-sub-relay', email: 'x7y8z9@privaterelay.appleid.com', email_verified: true },
  ...JSON.parse(env('OIDC_EXTRA_USERS', '{}')),
};
const DEFAULT_LOGIN_HINT = 'alice';
const userForHint = (hint) => USERS[hint || DEFAULT_LOGIN_HINT];
const userBySub = (sub) => Object.values(USERS).find((u) => u.sub === sub);

// Small in-memory adapter (the built-in one works but warns on every start).
const stores = new Map();
class MemoryAdapter {
  constructor(name) {
    this.name = name;
    if (!stores.has(name)) stores.set(name, new Map());
    this.store = stores.get(name);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    this.store.set(id, { payload, expiresAt });
    if (payload.grantId) {
      const key = `grant:${payload.grantId}`;
      const grants = stores.get('__grants') ?? new Map();
      stores.set('__grants', grants);
      if (!grants.has(key)) grants.set(key, []);
      grants.get(key).push([this.name, id]);
    }
  }

  async find(id) {
    const entry = this.store.get(id);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.store.delete(id);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    for (const [id, { payload }] of this.store) if (payload.uid === uid) return this.find(id);
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [id, { payload }] of this.store) if (payload.userCode === userCode) return this.find(id);
    return undefined;
  }

  async consume(id) {
    const entry = this.store.get(id);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    this.store.delete(id);
  }

  async revokeByGrantId(grantId) {
    const grants = stores.get('__grants');
    const key = `grant:${grantId}`;
    for (const [name, id] of grants?.get(key) ?? []) stores.get(name)?.delete(id);
    grants?.delete(key);
  }
}

// Login prompt also fires when login_hint names a different user than the session's,
// so reusing one cookie jar for alice then bob logs in as bob.
const policy = interactionPolicy.base();
policy.get('login').checks.add(new interactionPolicy.Check(
  'login_hint_mismatch',
  'login_hint names a different End-User than the current session',
  (ctx) => {
    const hint = ctx.oidc.params.login_hint;
    if (hint === undefined || ctx.oidc.result?.login) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    const user = userForHint(hint);
    return user && user.sub !== ctx.oidc.session.accountId
      ? interactionPolicy.Check.REQUEST_PROMPT
      : interactionPolicy.Check.NO_NEED_TO_PROMPT;
  },
));

async function main() {
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(env('PORT', '0')), '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const APPLE_AUDIENCE = env('APPLE_AUDIENCE', issuer);

  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: `rs256-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' };

  const provider = new Provider(issuer, {
    adapter: MemoryAdapter,
    clients: [
      {
        client_id: GOOGLE_CLIENT_ID,
        client_secret: GOOGLE_CLIENT_SECRET,
        redirect_uris: GOOGLE_REDIRECT_URIS,
        response_types: ['code'],
        grant_types: ['authorization_code'],
        // oidc-provider treats client_secret_basic and client_secret_post as one family:
        // a client registered with either may authenticate with either.
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'RS256',
      },
      {
        client_id: APPLE_CLIENT_ID,
        client_secret: APPLE_REGISTERED_SECRET,
        redirect_uris: APPLE_REDIRECT_URIS,
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'client_secret_post',
        id_token_signed_response_alg: 'RS256',
      },
    ],
    jwks: { keys: [signingJwk] },
    cookies: { keys: [randomBytes(32).toString('base64url'), randomBytes(32).toString('base64url')] },
    pkce: { required: () => true },
    conformIdTokenClaims: false,
    scopes: ['openid', 'email', 'profile'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    features: { devInteractions: { enabled: false } },
    interactions: { policy, url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      const user = userBySub(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          const { sub: s, email, email_verified: ev, name } = user;
          return Object.fromEntries(Object.entries({ sub: s, email, email_verified: ev, name })
            .filter(([, v]) => v !== undefined));
        },
      };
    },
    clientBasedCORS: () => false,
    ttl: {
      AccessToken: 600,
      AuthorizationCode: 60,
      IdToken: 600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  // Errors the provider handles itself (invalid_grant, ...) are answered and not logged;
  // unexpected ones are logged as one line, without a stack.
  provider.on('server_error', (ctx, err) => console.error(`oidc server_error: ${err?.message}`));

  // Auto-approved interactions: login as the login_hint user and grant what was asked.
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([^/]+)$/.exec(ctx.path);
    if (!m || ctx.method !== 'GET') return next();
    let details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      ctx.status = 400;
      ctx.body = { error: err.error ?? 'invalid_request', error_description: err.error_description ?? err.message };
      return undefined;
    }
    const { params } = details;
    const user = userForHint(params.login_hint);
    ctx.respond = false;
    if (!user) {
      await provider.interactionFinished(ctx.req, ctx.res, {
        error: 'access_denied',
        error_description: `unknown login_hint ${params.login_hint}`,
      }, { mergeWithLastSubmission: false });
      return undefined;
    }
    // Switching user inside one cookie jar: oidc-provider would answer with a logout-confirm
    // form (browser auto-submit). Drop the old session server-side instead, so the resume
    // starts a fresh session for the new user.
    if (details.session?.accountId && details.session.accountId !== user.sub) {
      const old = await provider.Session.findByUid(details.session.uid);
      if (old) await old.destroy();
      delete details.session;
      await details.save(details.exp - Math.floor(Date.now() / 1000));
    }
    const grant = new provider.Grant({ accountId: user.sub, clientId: params.client_id });
    if (params.scope) grant.addOIDCScope(params.scope);
    if (params.claims) {
      const requested = JSON.parse(params.claims);
      const names = [...Object.keys(requested.id_token ?? {}), ...Object.keys(requested.userinfo ?? {})];
      if (names.length) grant.addOIDCClaims(names);
    }
    const grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, {
      login: { accountId: user.sub },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    return undefined;
  });

  // Apple: client_secret is an ES256 JWT signed by the team's key; verify it, then swap in the
  // registered secret so the provider's own client_secret_post check passes.
  const applePublicKey = APPLE_PUBLIC_KEY_PEM ? await jose.importSPKI(APPLE_PUBLIC_KEY_PEM, 'ES256') : undefined;
  const invalidClient = (ctx, description) => {
    ctx.status = 401;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { error: 'invalid_client', error_description: description };
  };
  provider.use(async (ctx, next) => {
    if (ctx.path !== '/token' || ctx.method !== 'POST' || !ctx.is('application/x-www-form-urlencoded')) return next();
    const chunks = [];
    for await (const chunk of ctx.req) chunks.push(chunk);
    const raw = Buffer.concat(chunks);
    const form = new URLSearchParams(raw.toString('utf8'));
    let body = raw;

    let basicClientId;
    const auth = ctx.get('authorization');
    if (/^basic /i.test(auth)) {
      const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
      basicClientId = decodeURIComponent(decoded.split(':')[0].replace(/\+/g, '%20'));
    }

    if (form.get('client_id') === APPLE_CLIENT_ID || basicClientId === APPLE_CLIENT_ID) {
      if (basicClientId !== undefined) return invalidClient(ctx, 'the Apple client must use client_secret_post');
      const secret = form.get('client_secret');
      if (!secret) return invalidClient(ctx, 'client_secret (ES256 JWT) is required');
      if (!applePublicKey) return invalidClient(ctx, 'APPLE_PUBLIC_KEY_PEM is not configured');
      try {
        const { protectedHeader, payload } = await jose.jwtVerify(secret, applePublicKey, {
          algorithms: ['ES256'],
          issuer: APPLE_TEAM_ID,
          subject: APPLE_CLIENT_ID,
          audience: APPLE_AUDIENCE,
          requiredClaims: ['iat', 'exp'],
        });
        if (protectedHeader.kid !== APPLE_KEY_ID) throw new Error(`unexpected kid ${protectedHeader.kid}`);
        if (payload.exp - Math.floor(Date.now() / 1000) > APPLE_MAX_SECRET_LIFETIME) {
          throw new Error('exp is more than 6 months away');
        }
      } catch (err) {
        return invalidClient(ctx, `client_secret JWT rejected: ${err.message}`);
      }
      form.set('client_secret', APPLE_REGISTERED_SECRET);
      body = Buffer.from(form.toString(), 'utf8');
    }

    // The body was consumed; hand the provider an equivalent readable request.
    const req = Readable.from([body], { objectMode: false });
    for (const key of ['method', 'url', 'httpVersion', 'httpVersionMajor', 'httpVersionMinor', 'socket', 'connection', 'rawHeaders']) {
      req[key] = ctx.req[key];
    }
    req.headers = { ...ctx.req.headers, 'content-length': String(body.length) };
    delete req.headers['transfer-encoding'];
    ctx.req = req;
    ctx.request.req = req;
    ctx.response.req = req;
    return next();
  });

  server.on('request', provider.callback());
  process.stdout.write(`oidc listening on ${issuer}\n`);

  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(`oidc provider failed to start: ${err?.message ?? err}`);
  process.exit(1);
});
