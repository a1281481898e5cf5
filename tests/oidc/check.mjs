// End-to-end proof of the loopback OpenID provider (server.mjs) with plain fetch and a
// hand-kept cookie jar: Google-like code flow (query) and Apple-like code flow (form_post,
// ES256 client-secret JWT), plus the rejections the gateway relies on.
// Usage: node check.mjs   (from tests/oidc, after `npm ci`). Exit 0 only if all checks pass.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';

import * as jose from 'jose';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const REDIRECT_URI = 'http://127.0.0.1:9/cb';
const GOOGLE = { id: 'google-test-client', secret: 'google-test-secret' };
const APPLE = { id: 'apple-test-client', keyId: 'CHECKKEY01', teamId: 'CHECKTEAM1' };
const VERBOSE = process.env.VERBOSE === '1';

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed += 1; else failed += 1;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ` -- ${detail}` : ''}`);
  return ok;
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const pkcePair = () => {
  const verifier = b64url(randomBytes(32));
  return { verifier, challenge: b64url(createHash('sha256').update(verifier).digest()) };
};

// ---- cookie jar (name -> {value, path}); honours Path and deletion ----
class Jar {
  constructor() { this.cookies = new Map(); }

  store(res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = value === '';
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        if (k.toLowerCase() === 'path') path = v;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      const key = `${name}\u0000${path}`;
      if (expired) this.cookies.delete(key); else this.cookies.set(key, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.cookies.values()]
      .filter(({ path }) => pathname === path || pathname.startsWith(path.endsWith('/') ? path : `${path}/`))
      .map(({ name, value }) => `${name}=${value}`)
      .join('; ');
  }
}

// Follows 3xx hops on the provider, keeping cookies, until a hop leaves the provider
// (Location on the client's redirect_uri) or a non-redirect answer arrives (form_post HTML).
async function authorize(issuer, params, jar = new Jar()) {
  let url = `${issuer}/auth?${new URLSearchParams(params)}`;
  const hops = [];
  for (let i = 0; i < 10; i += 1) {
    const res = await fetch(url, { redirect: 'manual', headers: { cookie: jar.header(url) } });
    jar.store(res);
    const { pathname } = new URL(url);
    if (res.status >= 300 && res.status < 400) {
      const location = new URL(res.headers.get('location'), url).href;
      hops.push(`${res.status} ${pathname.replace(/\/[A-Za-z0-9_-]{20,}$/, '/:uid')}`);
      if (!location.startsWith(issuer)) {
        const cb = new URL(location);
        return { hops, jar, kind: 'redirect', location, fields: Object.fromEntries(cb.searchParams) };
      }
      url = location;
      continue;
    }
    const text = await res.text();
    hops.push(`${res.status} ${pathname.replace(/\/[A-Za-z0-9_-]{20,}$/, '/:uid')}`);
    const action = /<form[^>]*action="([^"]+)"/i.exec(text)?.[1];
    const fields = {};
    for (const m of text.matchAll(/<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"/gi)) {
      fields[m[1]] = m[2].replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>');
    }
    return { hops, jar, kind: action ? 'form_post' : 'other', status: res.status, action, fields, text };
  }
  throw new Error('too many hops');
}

async function token(issuer, form, headers = {}) {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = { raw: text }; }
  return { status: res.status, json };
}

const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

async function appleSecret(privateKey, issuer, overrides = {}) {
  const o = { kid: APPLE.keyId, iss: APPLE.teamId, sub: APPLE.id, aud: issuer, exp: '10m', ...overrides };
  return new jose.SignJWT({})
    .setProtectedHeader({ alg: 'ES256', kid: o.kid })
    .setIssuer(o.iss)
    .setSubject(o.sub)
    .setAudience(o.aud)
    .setIssuedAt()
    .setExpirationTime(o.exp)
    .sign(o.key ?? privateKey);
}

// Starts server.mjs with the given env; resolves once the ready line is printed.
async function startProvider(extraEnv) {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['server.mjs'], {
    cwd: HERE,
    env: { ...process.env, PORT: '0', ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const issuer = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`provider not ready in 15s; stderr: ${stderr}`)); }, 15000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = /^oidc listening on (http:\/\/127\.0\.0\.1:\d+)\n/m.exec(stdout);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.once('exit', (code) => reject(new Error(`provider exited ${code}; stderr: ${stderr}`)));
  });
  const startMs = performance.now() - t0;
  console.log(`INFO provider ready at ${issuer} in ${startMs.toFixed(0)} ms (spawn to ready line)`);
  return {
    issuer,
    startMs,
    async stop() {
      child.removeAllListeners('exit');
      child.kill('SIGTERM');
      const [code, signal] = await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(() => r(['timeout']), 3000))]);
      check(`provider ${issuer} exits 0 on SIGTERM`, code === 0, `code=${code} signal=${signal ?? ''}`);
      const extra = stdout.replace(/^oidc listening on .*\n/, '');
      check(`provider ${issuer} stdout is exactly the ready line`, extra === '', JSON.stringify(extra));
      check(`provider ${issuer} stderr is empty`, stderr === '', JSON.stringify(stderr.slice(0, 500)));
    },
  };
}

// Second provider: every client setting from env, fixed PORT, Apple aud = Apple's real one.
async function envOverrides(privateKey, publicPem) {
  const port = await new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => { const p = srv.address().port; srv.close(() => resolve(p)); });
  });
  const G = { id: 'gw-google.apps.example', secret: 'gw-google-secret' };
  const A = { id: 'com.example.qnp.web', keyId: 'KEYID12345', teamId: 'TEAMID1234', aud: 'https://appleid.apple.com' };
  const cb = `http://127.0.0.1:${port + 1}/auth/google/callback`;
  const acb = `http://127.0.0.1:${port + 1}/auth/apple/callback`;
  const provider = await startProvider({
    PORT: String(port),
    GOOGLE_CLIENT_ID: G.id,
    GOOGLE_CLIENT_SECRET: G.secret,
    GOOGLE_REDIRECT_URIS: cb,
    APPLE_CLIENT_ID: A.id,
    APPLE_REDIRECT_URIS: acb,
    APPLE_REGISTERED_SECRET: 'other-registered',
    APPLE_PUBLIC_KEY_PEM: publicPem.replace(/\n/g, '\\n'), // single-line form with literal \n
    APPLE_KEY_ID: A.keyId,
    APPLE_TEAM_ID: A.teamId,
    APPLE_AUDIENCE: A.aud,
  });
  const { issuer } = provider;
  try {
    check('env: fixed PORT honoured', issuer === `http://127.0.0.1:${port}`, issuer);
    const JWKS = jose.createRemoteJWKSet(new URL(`${issuer}/jwks`));
    const pkce = pkcePair();
    const g = await authorize(issuer, {
      client_id: G.id, response_type: 'code', redirect_uri: cb, scope: 'openid email profile', state: 'st', nonce: 'nn',
      code_challenge: pkce.challenge, code_challenge_method: 'S256',
    });
    const gt = await token(issuer, {
      grant_type: 'authorization_code', code: g.fields.code, redirect_uri: cb, code_verifier: pkce.verifier,
    }, { authorization: basic(G.id, G.secret) });
    const gp = gt.json.id_token && (await jose.jwtVerify(gt.json.id_token, JWKS, { issuer, audience: G.id })).payload;
    check('env: Google client id/secret/redirect from env', gt.status === 200 && gp?.sub === 'google-sub-alice' && gp?.nonce === 'nn',
      `${gt.status} ${JSON.stringify(gp ?? gt.json)}`);

    const apkce = pkcePair();
    const a = await authorize(issuer, {
      client_id: A.id, response_type: 'code', response_mode: 'form_post', redirect_uri: acb, scope: 'openid email', state: 'as',
      code_challenge: apkce.challenge, code_challenge_method: 'S256', login_hint: 'relay',
    });
    const form = (secret) => ({
      grant_type: 'authorization_code', code: a.fields.code, redirect_uri: acb, code_verifier: apkce.verifier,
      client_id: A.id, client_secret: secret,
    });
    const issuerAud = await token(issuer, form(await appleSecret(privateKey, issuer, { kid: A.keyId, iss: A.teamId, sub: A.id })));
    check('env: APPLE_AUDIENCE set -> JWT with aud=issuer rejected', issuerAud.status === 401 && issuerAud.json.error === 'invalid_client',
      `${issuerAud.status} ${JSON.stringify(issuerAud.json)}`);
    const at = await token(issuer, form(await appleSecret(privateKey, issuer, { kid: A.keyId, iss: A.teamId, sub: A.id, aud: A.aud })));
    const ap = at.json.id_token && (await jose.jwtVerify(at.json.id_token, JWKS, { issuer, audience: A.id })).payload;
    check('env: Apple client id/kid/team/aud/PEM from env', a.kind === 'form_post' && a.action === acb && at.status === 200
      && ap?.sub === 'apple-sub-relay', `${at.status} ${JSON.stringify(ap ?? at.json)}`);
  } finally {
    await provider.stop();
  }
}

async function main() {
  // Apple's team key: generated here; the provider gets only the public half.
  const { publicKey, privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
  const publicPem = await jose.exportSPKI(publicKey);

  const provider = await startProvider({
    GOOGLE_REDIRECT_URIS: `${REDIRECT_URI},http://127.0.0.1:9/other`,
    APPLE_REDIRECT_URIS: REDIRECT_URI,
    APPLE_PUBLIC_KEY_PEM: publicPem,
    APPLE_KEY_ID: APPLE.keyId,
    APPLE_TEAM_ID: APPLE.teamId,
  });
  const { issuer } = provider;

  try {
    // ---- discovery ----
    const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    check('discovery issuer', disco.issuer === issuer, disco.issuer);
    check('discovery endpoints', disco.authorization_endpoint === `${issuer}/auth`
      && disco.token_endpoint === `${issuer}/token` && disco.jwks_uri === `${issuer}/jwks`
      && disco.userinfo_endpoint === `${issuer}/me`,
    `${disco.authorization_endpoint} ${disco.token_endpoint} ${disco.jwks_uri}`);
    check('discovery S256 + form_post + RS256', disco.code_challenge_methods_supported?.includes('S256')
      && disco.response_modes_supported?.includes('form_post')
      && disco.id_token_signing_alg_values_supported?.includes('RS256'),
    JSON.stringify({ pkce: disco.code_challenge_methods_supported, modes: disco.response_modes_supported }));
    if (VERBOSE) console.log(JSON.stringify(disco, null, 2));
    const JWKS = jose.createRemoteJWKSet(new URL(disco.jwks_uri));

    const googleAuth = (extra = {}, jar) => {
      const pkce = pkcePair();
      const state = b64url(randomBytes(12));
      const nonce = b64url(randomBytes(12));
      const params = {
        client_id: GOOGLE.id,
        response_type: 'code',
        redirect_uri: REDIRECT_URI,
        scope: 'openid email profile',
        state,
        nonce,
        code_challenge: pkce.challenge,
        code_challenge_method: 'S256',
        ...extra,
      };
      return authorize(issuer, params, jar).then((r) => ({ ...r, pkce, state, nonce }));
    };

    // ---- Google: happy path (client_secret_post) ----
    const g = await googleAuth();
    console.log(`INFO google hops: ${g.hops.join(' -> ')} -> ${g.location?.split('?')[0]}`);
    check('google: redirected to redirect_uri with code', g.kind === 'redirect'
      && g.location.startsWith(`${REDIRECT_URI}?`) && !!g.fields.code, g.location);
    check('google: state echoed, iss present', g.fields.state === g.state && g.fields.iss === issuer,
      JSON.stringify({ state: g.fields.state, iss: g.fields.iss }));
    const gt = await token(issuer, {
      grant_type: 'authorization_code', code: g.fields.code, redirect_uri: REDIRECT_URI,
      code_verifier: g.pkce.verifier, client_id: GOOGLE.id, client_secret: GOOGLE.secret,
    });
    check('google: token exchange (client_secret_post) 200', gt.status === 200 && !!gt.json.id_token,
      `${gt.status} ${JSON.stringify(gt.json).slice(0, 200)}`);
    if (gt.json.id_token) {
      const { payload, protectedHeader } = await jose.jwtVerify(gt.json.id_token, JWKS, { issuer, audience: GOOGLE.id });
      if (VERBOSE) console.log(JSON.stringify({ protectedHeader, payload }));
      check('google: id_token RS256 verified against JWKS (iss, aud)', protectedHeader.alg === 'RS256', protectedHeader.alg);
      check('google: id_token nonce', payload.nonce === g.nonce);
      check('google: id_token claims', payload.sub === 'google-sub-alice' && payload.email === 'alice@example.com'
        && payload.email_verified === true && payload.name === 'Alice Example', JSON.stringify(payload));
    }
    check('google: access_token bearer', gt.json.token_type === 'Bearer' && !!gt.json.access_token,
      JSON.stringify(Object.keys(gt.json)));

    if (gt.json.access_token) {
      const me = await fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${gt.json.access_token}` } });
      const info = await me.json();
      check('google: userinfo with the access token', me.status === 200 && info.sub === 'google-sub-alice' && info.email === 'alice@example.com',
        `${me.status} ${JSON.stringify(info)}`);
    }

    // ---- replayed code ----
    const replay = await token(issuer, {
      grant_type: 'authorization_code', code: g.fields.code, redirect_uri: REDIRECT_URI,
      code_verifier: g.pkce.verifier, client_id: GOOGLE.id, client_secret: GOOGLE.secret,
    });
    check('google: replayed code -> 400 invalid_grant', replay.status === 400 && replay.json.error === 'invalid_grant',
      `${replay.status} ${JSON.stringify(replay.json)}`);

    // ---- wrong verifier (does not burn the code), then client_secret_basic works ----
    const g2 = await googleAuth({ login_hint: 'bob' });
    const badVerifier = await token(issuer, {
      grant_type: 'authorization_code', code: g2.fields.code, redirect_uri: REDIRECT_URI,
      code_verifier: pkcePair().verifier, client_id: GOOGLE.id, client_secret: GOOGLE.secret,
    });
    check('google: wrong code_verifier -> 400 invalid_grant', badVerifier.status === 400 && badVerifier.json.error === 'invalid_grant',
      `${badVerifier.status} ${JSON.stringify(badVerifier.json)}`);
    const noVerifier = await token(issuer, {
      grant_type: 'authorization_code', code: g2.fields.code, redirect_uri: REDIRECT_URI,
      client_id: GOOGLE.id, client_secret: GOOGLE.secret,
    });
    check('google: missing code_verifier at token -> 400 invalid_grant', noVerifier.status === 400 && noVerifier.json.error === 'invalid_grant',
      `${noVerifier.status} ${JSON.stringify(noVerifier.json)}`);
    const wrongSecret = await token(issuer, {
      grant_type: 'authorization_code', code: g2.fields.code, redirect_uri: REDIRECT_URI,
      code_verifier: g2.pkce.verifier, client_id: GOOGLE.id, client_secret: 'wrong-secret',
    });
    check('google: wrong client_secret (post) -> 401 invalid_client', wrongSecret.status === 401 && wrongSecret.json.error === 'invalid_client',
      `${wrongSecret.status} ${JSON.stringify(wrongSecret.json)}`);
    const wrongBasic = await token(issuer, {
      grant_type: 'authorization_code', code: g2.fields.code, redirect_uri: REDIRECT_URI, code_verifier: g2.pkce.verifier,
    }, { authorization: basic(GOOGLE.id, 'wrong-secret') });
    check('google: wrong client_secret (basic) -> 401 invalid_client', wrongBasic.status === 401 && wrongBasic.json.error === 'invalid_client',
      `${wrongBasic.status} ${JSON.stringify(wrongBasic.json)}`);
    const wrongRedirect = await token(issuer, {
      grant_type: 'authorization_code', code: g2.fields.code, redirect_uri: 'http://127.0.0.1:9/other',
      code_verifier: g2.pkce.verifier, client_id: GOOGLE.id, client_secret: GOOGLE.secret,
    });
    check('google: redirect_uri mismatch at token -> 400 invalid_grant', wrongRedirect.status === 400 && wrongRedirect.json.error === 'invalid_grant',
      `${wrongRedirect.status} ${JSON.stringify(wrongRedirect.json)}`);
    // The provider revokes a code on redirect_uri mismatch? Only verifier/secret failures are
    // known not to burn it; get a fresh code for the basic-auth success check if needed.
    let basicOk = await token(issuer, {
      grant_type: 'authorization_code', code: g2.fields.code, redirect_uri: REDIRECT_URI, code_verifier: g2.pkce.verifier,
    }, { authorization: basic(GOOGLE.id, GOOGLE.secret) });
    let survived = basicOk.status === 200;
    if (!survived) {
      const g3 = await googleAuth({ login_hint: 'bob' });
      basicOk = await token(issuer, {
        grant_type: 'authorization_code', code: g3.fields.code, redirect_uri: REDIRECT_URI, code_verifier: g3.pkce.verifier,
      }, { authorization: basic(GOOGLE.id, GOOGLE.secret) });
    }
    console.log(`INFO code still usable after bad verifier, missing verifier, bad secret, redirect_uri mismatch: ${survived}`);
    check('google: token exchange (client_secret_basic) 200', basicOk.status === 200 && !!basicOk.json.id_token,
      `${basicOk.status} ${JSON.stringify(basicOk.json).slice(0, 200)}`);
    if (basicOk.json.id_token) {
      const { payload } = await jose.jwtVerify(basicOk.json.id_token, JWKS, { issuer, audience: GOOGLE.id });
      check('google: login_hint=bob -> bob', payload.sub === 'google-sub-bob' && payload.email === 'bob@example.com', JSON.stringify(payload));
    }

    // ---- bad verifier on its own does not burn the code ----
    const g4 = await googleAuth();
    await token(issuer, {
      grant_type: 'authorization_code', code: g4.fields.code, redirect_uri: REDIRECT_URI,
      code_verifier: pkcePair().verifier, client_id: GOOGLE.id, client_secret: GOOGLE.secret,
    });
    const afterBad = await token(issuer, {
      grant_type: 'authorization_code', code: g4.fields.code, redirect_uri: REDIRECT_URI,
      code_verifier: g4.pkce.verifier, client_id: GOOGLE.id, client_secret: GOOGLE.secret,
    });
    check('google: code still redeemable after a wrong-verifier attempt', afterBad.status === 200, `${afterBad.status} ${JSON.stringify(afterBad.json).slice(0, 150)}`);

    // ---- missing PKCE at the authorization endpoint ----
    {
      const pkceless = { client_id: GOOGLE.id, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid email', state: 'st-nopkce', nonce: 'n' };
      const r = await authorize(issuer, pkceless);
      console.log(`INFO missing-PKCE hops: ${r.hops.join(' -> ')} -> ${r.location?.split('?')[0]}`);
      check('google: missing PKCE -> redirect error=invalid_request', r.kind === 'redirect' && r.fields.error === 'invalid_request'
        && r.fields.state === 'st-nopkce', r.location);
    }
    const plain = await authorize(issuer, { client_id: GOOGLE.id, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid', state: 's', code_challenge: 'x'.repeat(43), code_challenge_method: 'plain' });
    check('google: code_challenge_method=plain rejected', plain.kind === 'redirect' && plain.fields.error === 'invalid_request', plain.location);

    // ---- unregistered redirect_uri: error page, no redirect ----
    const badRedirect = await authorize(issuer, { client_id: GOOGLE.id, response_type: 'code', redirect_uri: 'http://127.0.0.1:9/evil', scope: 'openid', state: 's', code_challenge: pkcePair().challenge, code_challenge_method: 'S256' });
    check('google: unregistered redirect_uri -> 400, not redirected', badRedirect.kind === 'other' && badRedirect.status === 400,
      `${badRedirect.status} ${badRedirect.text?.slice(0, 150)}`);

    // ---- unknown login_hint -> access_denied ----
    const unknown = await googleAuth({ login_hint: 'mallory' });
    check('google: unknown login_hint -> error=access_denied', unknown.fields.error === 'access_denied', unknown.location);

    // ---- same cookie jar: second authorization reuses the session; login_hint switch re-logs ----
    const jar = new Jar();
    const s1 = await googleAuth({}, jar);
    const s2 = await googleAuth({}, jar);
    console.log(`INFO google hops with an existing session: ${s2.hops.join(' -> ')}`);
    const s3 = await googleAuth({ login_hint: 'bob' }, jar);
    const s3t = await token(issuer, {
      grant_type: 'authorization_code', code: s3.fields.code, redirect_uri: REDIRECT_URI,
      code_verifier: s3.pkce.verifier, client_id: GOOGLE.id, client_secret: GOOGLE.secret,
    });
    const s3sub = s3t.json.id_token ? jose.decodeJwt(s3t.json.id_token).sub : undefined;
    check('google: reused jar, existing session -> single hop; login_hint=bob switches user',
      !!s1.fields.code && s2.hops.length === 1 && !!s2.fields.code && s3sub === 'google-sub-bob',
      `${s2.hops.join(' -> ')}; bob: ${s3.hops.join(' -> ')} sub=${s3sub}`);

    // ---- Apple: form_post + ES256 client secret ----
    const appleAuth = async (extra = {}) => {
      const pkce = pkcePair();
      const state = b64url(randomBytes(12));
      const nonce = b64url(randomBytes(12));
      const r = await authorize(issuer, {
        client_id: APPLE.id, response_type: 'code', response_mode: 'form_post', redirect_uri: REDIRECT_URI,
        scope: 'openid email', state, nonce, code_challenge: pkce.challenge, code_challenge_method: 'S256',
        login_hint: 'relay', ...extra,
      });
      return { ...r, pkce, state, nonce };
    };
    const a = await appleAuth();
    console.log(`INFO apple hops: ${a.hops.join(' -> ')} (auto-submit form to ${a.action})`);
    check('apple: form_post HTML with code/state/iss to redirect_uri', a.kind === 'form_post' && a.status === 200
      && a.action === REDIRECT_URI && !!a.fields.code && a.fields.state === a.state && a.fields.iss === issuer,
    JSON.stringify({ kind: a.kind, action: a.action, fields: Object.keys(a.fields) }));
    const appleForm = (code, verifier, secret) => ({
      grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier,
      client_id: APPLE.id, client_secret: secret,
    });
    const { privateKey: otherKey } = await jose.generateKeyPair('ES256');
    const badSecrets = {
      'registered plain secret': APPLE_REGISTERED_SECRET_DEFAULT,
      'signed by another key': await appleSecret(privateKey, issuer, { key: otherKey }),
      'wrong kid': await appleSecret(privateKey, issuer, { kid: 'OTHERKEY00' }),
      'wrong iss (team)': await appleSecret(privateKey, issuer, { iss: 'OTHERTEAM0' }),
      'wrong sub': await appleSecret(privateKey, issuer, { sub: 'someone-else' }),
      'wrong aud': await appleSecret(privateKey, issuer, { aud: 'https://appleid.apple.com' }),
      'expired': await appleSecret(privateKey, issuer, { exp: Math.floor(Date.now() / 1000) - 120 }),
      'exp > 6 months': await appleSecret(privateKey, issuer, { exp: '200d' }),
    };
    for (const [label, secret] of Object.entries(badSecrets)) {
      const r = await token(issuer, appleForm(a.fields.code, a.pkce.verifier, secret));
      check(`apple: client_secret ${label} -> 401 invalid_client`, r.status === 401 && r.json.error === 'invalid_client',
        `${r.status} ${JSON.stringify(r.json)}`);
    }
    const appleBasic = await token(issuer, {
      grant_type: 'authorization_code', code: a.fields.code, redirect_uri: REDIRECT_URI, code_verifier: a.pkce.verifier,
    }, { authorization: basic(APPLE.id, await appleSecret(privateKey, issuer)) });
    check('apple: client_secret_basic refused -> 401 invalid_client', appleBasic.status === 401 && appleBasic.json.error === 'invalid_client',
      `${appleBasic.status} ${JSON.stringify(appleBasic.json)}`);
    const appleBadVerifier = await token(issuer, appleForm(a.fields.code, pkcePair().verifier, await appleSecret(privateKey, issuer)));
    check('apple: wrong code_verifier -> 400 invalid_grant', appleBadVerifier.status === 400 && appleBadVerifier.json.error === 'invalid_grant',
      `${appleBadVerifier.status} ${JSON.stringify(appleBadVerifier.json)}`);
    const at = await token(issuer, appleForm(a.fields.code, a.pkce.verifier, await appleSecret(privateKey, issuer, { exp: '179d' })));
    check('apple: token exchange with ES256 client-secret JWT 200', at.status === 200 && !!at.json.id_token,
      `${at.status} ${JSON.stringify(at.json).slice(0, 200)}`);
    if (at.json.id_token) {
      const { payload, protectedHeader } = await jose.jwtVerify(at.json.id_token, JWKS, { issuer, audience: APPLE.id });
      if (VERBOSE) console.log(JSON.stringify({ protectedHeader, payload }));
      check('apple: id_token verified (RS256, iss, aud), nonce', protectedHeader.alg === 'RS256' && payload.nonce === a.nonce);
      check('apple: id_token relay claims, no name', payload.sub === 'apple-sub-relay'
        && payload.email === 'x7y8z9@privaterelay.appleid.com' && payload.email_verified === true && !('name' in payload),
      JSON.stringify(payload));
    }
    const appleReplay = await token(issuer, appleForm(a.fields.code, a.pkce.verifier, await appleSecret(privateKey, issuer)));
    check('apple: replayed code -> 400 invalid_grant', appleReplay.status === 400 && appleReplay.json.error === 'invalid_grant',
      `${appleReplay.status} ${JSON.stringify(appleReplay.json)}`);
    const appleNoPkce = await authorize(issuer, {
      client_id: APPLE.id, response_type: 'code', response_mode: 'form_post', redirect_uri: REDIRECT_URI, scope: 'openid email', state: 'st-apple',
    });
    check('apple: missing PKCE -> form_post error=invalid_request', appleNoPkce.kind === 'form_post' && appleNoPkce.fields.error === 'invalid_request'
      && appleNoPkce.fields.state === 'st-apple', JSON.stringify(appleNoPkce.fields));
    // Apple asks for scope "name email"; see what the provider does with the unknown "name" scope.
    const appleNameScope = await appleAuth({ scope: 'openid name email' });
    console.log(`INFO apple scope "openid name email": ${appleNameScope.kind} ${JSON.stringify(Object.keys(appleNameScope.fields))}`);
  } finally {
    await provider.stop();
  }

  await envOverrides(privateKey, publicPem);

  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

const APPLE_REGISTERED_SECRET_DEFAULT = 'apple-registered-secret';

main().catch((err) => {
  console.log(`FAIL check aborted -- ${err?.stack ?? err}`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exitCode = 1;
});
