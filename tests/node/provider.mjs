// A real OpenID Connect provider for ward's tests: panva/oidc-provider
// (certified), with its own login form (devInteractions), the device
// authorization grant and PKCE. Everything comes from one JSON file:
//
//   node provider.mjs CONFIG.json
//
// { "issuer": "https://127.0.0.1:PORT", "port": PORT,
//   "tls": { "cert": "PEM path", "key": "PEM path" },
//   "clients": [ oidc-provider client metadata ... ],
//   "accounts": { "alice": { "groups": [...], "department": "..." } },
//   "id_token_ttl": seconds, "jwks": { "keys": [private JWKs] } (optional) }
//
// It prints "listening" once it serves.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts ?? {};

const provider = new Provider(config.issuer, {
  clients: config.clients,
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username', 'groups', 'department'],
    email: ['email'],
  },
  // Claims go into the ID token itself, not only the userinfo endpoint.
  conformIdTokenClaims: false,
  findAccount: async (ctx, id) => {
    const claims = accounts[id];
    if (!claims) return undefined;
    return {
      accountId: id,
      claims: async () => ({
        sub: id, name: id, preferred_username: id, email: `${id}@example.test`, ...claims,
      }),
    };
  },
  pkce: { required: () => true },
  ttl: {
    IdToken: config.id_token_ttl ?? 3600,
    AccessToken: 3600,
    AuthorizationCode: 60,
    DeviceCode: 600,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
  },
  cookies: { keys: ['ward-test-cookie-key'] },
  // Its own signing keys when given (two providers sharing keys differ
  // only in their issuer), else the library's development keys.
  ...(config.jwks ? { jwks: config.jwks } : {}),
});
provider.proxy = false;

const server = https.createServer(
  { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) },
  provider.callback(),
);
server.listen(config.port, '127.0.0.1', () => console.log('listening'));
