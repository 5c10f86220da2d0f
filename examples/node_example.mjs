// guildkey from JavaScript (Node 18+ fetch): verify the key, check a ban, add a role.
// Usage: GUILDKEY_URL=http://127.0.0.1:8080 GUILDKEY_KEY=gk_live_… GUILD_ID=… USER_ID=… ROLE_ID=… node node_example.mjs

class GuildKeyError extends Error {
  constructor(status, reason, message) {
    super(`${status} ${reason}: ${message}`);
    this.status = status;
    this.reason = reason; // machine-readable, e.g. "insufficient_scope"
  }
}

export class GuildKey {
  constructor(baseUrl, apiKey) {
    this.base = baseUrl.replace(/\/$/, "");
    this.apiKey = apiKey;
  }

  async call(method, path) {
    const resp = await fetch(this.base + path, {
      method,
      headers: { Authorization: `Bearer ${this.apiKey}` },
    });
    const body = await resp.json();
    if (!body.success) throw new GuildKeyError(body.error.code, body.error.reason, body.error.message);
    return body.data;
  }

  verify() { return this.call("GET", "/v1/verify"); }
  async isBanned(guildId, userId) { return (await this.call("GET", `/v1/guilds/${guildId}/bans/${userId}`)).banned; }
  addRole(guildId, userId, roleId) { return this.call("PUT", `/v1/guilds/${guildId}/members/${userId}/roles/${roleId}`); }
}

const env = process.env;
const gk = new GuildKey(env.GUILDKEY_URL, env.GUILDKEY_KEY);
const key = await gk.verify();
console.log(`key ${key.name} (${key.prefix}) scopes=${key.scopes.join(",")}`);
console.log(`banned=${await gk.isBanned(env.GUILD_ID, env.USER_ID)}`);
try {
  const r = await gk.addRole(env.GUILD_ID, env.USER_ID, env.ROLE_ID);
  console.log(`role changed=${r.changed} dry_run=${r.dry_run}`);
} catch (e) {
  if (!(e instanceof GuildKeyError)) throw e;
  console.log(`role error=${e.reason}`);
  process.exitCode = 1;
}
