--!strict
--[[
GuildKey: a Roblox server-side client for the guildkey HTTP API (a ModuleScript).

	local GuildKey = require(game:GetService("ServerScriptService").GuildKey)
	local gk = GuildKey.new("https://guildkey.example.com", apiKey)
	local result = gk:isBanned("123456789012345678")
	if result.ok and result.data.banned then ... end

Every method returns a result table instead of throwing (see `Result<T>`
below): `{ ok = true, status, data }` or
`{ ok = false, status, reason, message, retryAfter? }`. Only `GuildKey.new`
throws, for mistakes in the code that calls it (a bad URL, no key, running on
a Roblox client).

Discord ids (user, role, guild) are passed as strings of digits: they are
larger than a Luau number holds exactly. Small whole numbers are accepted too.

The API key is kept out of the object (a `print(gk)` in Studio shows no
secret) and out of every message this module produces. Keep it on the server,
best in the experience's Secrets store (pass `HttpService:GetSecret(name)` as
the key): see README.md beside this file.

Outside Roblox (tests, Lune, ...), pass `request`, `jsonEncode`, `jsonDecode`,
`sleep` and `clock` in the options; inside Roblox they default to
HttpService:RequestAsync, HttpService:JSONEncode/JSONDecode, task.wait and
os.clock.
]]

-- Machine-readable reasons. The first group is the listener's, the same
-- list as the README's Reasons and the OpenAPI document's ErrorBody.reason
-- (a test holds the three equal); the last three are this client's own, for
-- calls that never got a guildkey answer.
export type Reason =
	"bad_request"
	| "missing_key"
	| "malformed_key"
	| "invalid_key"
	| "key_revoked"
	| "key_expired"
	| "key_suspended"
	| "guild_mismatch"
	| "insufficient_scope"
	| "ip_not_allowed"
	| "role_not_allowed"
	| "member_protected"
	| "not_found"
	| "method_not_allowed"
	| "timeout"
	| "conflict"
	| "payload_too_large"
	| "headers_too_large"
	| "rate_limited"
	| "internal_error"
	| "discord_error"
	| "discord_paused"
	| "discord_busy"
	| "index_stale"
	| "database_unavailable"
	| "not_linked"
	| "ambiguous_link"
	| "linker_error"
	| "linker_limited"
	-- The request never reached the listener, or no answer came back
	-- (status 0): HTTP requests disabled, DNS, TLS, connection refused.
	| "network_error"
	-- An answer came back that is not guildkey's JSON envelope (a proxy's
	-- HTML error page, say); status is the HTTP status.
	| "bad_response"
	-- An argument was wrong (an id that is not a Discord id); nothing was sent
	-- (status 0).
	| "invalid_argument"

export type Success<T> = {
	ok: true,
	-- The HTTP status (200).
	status: number,
	-- The envelope's `data`, as the listener sent it (snake_case fields).
	data: T,
	-- True when isBanned answered from this client's cache.
	cached: boolean?,
}

export type Failure = {
	ok: false,
	-- The HTTP status, or 0 when no HTTP answer came back.
	status: number,
	reason: Reason,
	-- For people (logs, the developer console); never contains the key.
	message: string,
	-- On 429 rate_limited: seconds the listener asked to wait (Retry-After).
	retryAfter: number?,
}

export type Result<T> = Success<T> | Failure

-- GET /v1/verify
export type KeyInfo = {
	key_id: string,
	guild_id: string,
	name: string,
	prefix: string,
	scopes: { string },
	environment: "live" | "test",
	expires_at: string?,
	rate_limit_per_minute: number,
}

-- GET /v1/guilds/{g}/bans/{u}
export type BanStatus = {
	banned: boolean,
	reason: string?,
}

-- PUT / DELETE /v1/guilds/{g}/bans/{u}
export type BanOutcome = {
	banned: boolean,
	-- False when the user already was (or was not) banned, and for a test key.
	changed: boolean,
	-- True for a test key (gk_test_...): nothing was changed on Discord.
	dry_run: boolean,
	audit_event_id: number?,
}

-- PUT / DELETE /v1/guilds/{g}/members/{u}/roles/{r}
export type RoleOutcome = {
	user_id: string,
	role_id: string,
	has_role: boolean,
	changed: boolean,
	dry_run: boolean,
	audit_event_id: number?,
}

export type BanOptions = {
	-- Shown in Discord's audit log after the key's name (at most 512 characters).
	reason: string?,
	-- Delete the user's Discord messages from this many seconds back (0–604800).
	deleteMessageSeconds: number?,
}

-- What HttpService:RequestAsync takes and returns; an injected `request`
-- speaks the same shape (and may throw, as RequestAsync does).
export type HttpRequest = {
	Url: string,
	Method: string,
	-- Strings, except Authorization when the key is a Roblox Secret.
	Headers: { [string]: any },
	Body: string?,
}

export type HttpResponse = {
	Success: boolean,
	StatusCode: number,
	StatusMessage: string?,
	Headers: { [string]: string }?,
	Body: string?,
}

export type Options = {
	-- The key's guild; when absent it is read once from :verify().
	guildId: string?,
	-- Seconds an isBanned answer is reused (default 5; 0 turns the cache off).
	cacheTtl: number?,
	-- Tries per call, the first included (default 4).
	maxAttempts: number?,
	-- First backoff delay in seconds, doubled per retry (default 0.5) ...
	baseDelay: number?,
	-- ... up to this many seconds (default 8).
	maxDelay: number?,
	-- A 429 asking to wait longer than this many seconds is returned at once
	-- instead of waited for (default 30).
	maxRetryAfter: number?,
	request: ((HttpRequest) -> HttpResponse)?,
	jsonEncode: ((any) -> string)?,
	jsonDecode: ((string) -> any)?,
	-- Seconds, monotonic; for the cache.
	clock: (() -> number)?,
	-- Waits this many seconds; for retries.
	sleep: ((number) -> ())?,
	-- Something with :IsClient() and :IsServer() (default: RunService).
	runService: any?,
}

local DEFAULT_CACHE_TTL = 5
local DEFAULT_MAX_ATTEMPTS = 4
local DEFAULT_BASE_DELAY = 0.5
local DEFAULT_MAX_DELAY = 8
local DEFAULT_MAX_RETRY_AFTER = 30
-- Entries kept before expired ones are swept (one per recently seen user).
local CACHE_MAX_ENTRIES = 1000
-- Larger whole numbers are not exact in a Luau number.
local MAX_EXACT_INTEGER = 2 ^ 53
local MAX_DELETE_MESSAGE_SECONDS = 604800

type CacheEntry = { expires: number, data: BanStatus }

type Fields = {
	_baseUrl: string,
	_guildId: string?,
	_cache: { [string]: CacheEntry },
	_cacheCount: number,
	_cacheTtl: number,
	_maxAttempts: number,
	_baseDelay: number,
	_maxDelay: number,
	_maxRetryAfter: number,
	_request: (HttpRequest) -> HttpResponse,
	_encode: (any) -> string,
	_decode: (string) -> any,
	_clock: () -> number,
	_sleep: (number) -> (),
}

local GuildKey = {}
GuildKey.__index = GuildKey

export type GuildKey = typeof(setmetatable({} :: Fields, GuildKey))

-- What a client authenticates with: the Authorization header's value (a
-- string, or a Roblox Secret), and the plain key when it was given as a
-- string (to redact it from messages).
type Credential = { authorization: any, plain: string? }

-- The credentials, held beside the objects rather than in them, so that
-- printing or inspecting a client never shows a key. Weak keys: a dropped
-- client frees its entry.
local secrets: { [any]: Credential } = setmetatable({}, { __mode = "k" }) :: any

-- Removes every occurrence of the key from a message (a transport error
-- could, in theory, echo a header).
local function redact(self: GuildKey, text: string): string
	local credential = secrets[self]
	local key = if credential then credential.plain else nil
	if key == nil or key == "" then
		return text
	end
	local out, from = {}, 1
	while true do
		local s, e = string.find(text, key, from, true)
		if s == nil then
			break
		end
		table.insert(out, string.sub(text, from, s - 1))
		table.insert(out, "[redacted]")
		from = (e :: number) + 1
	end
	table.insert(out, string.sub(text, from))
	return table.concat(out)
end

local function failure(status: number, reason: Reason, message: string, retryAfter: number?): Failure
	return { ok = false, status = status, reason = reason, message = message, retryAfter = retryAfter }
end

-- A Discord id as the string the URL needs, or nil.
local function snowflake(value: any): string?
	if type(value) == "string" then
		if #value >= 1 and #value <= 20 and string.match(value, "^%d+$") and string.match(value, "[1-9]") then
			return value
		end
	elseif type(value) == "number" then
		if value > 0 and value < MAX_EXACT_INTEGER and value == math.floor(value) then
			return string.format("%d", value)
		end
	end
	return nil
end

local function badId(name: string, value: any): Failure
	local hint = if type(value) == "number"
		then " (pass Discord ids as strings: a number this large is not exact in Luau)"
		else ""
	return failure(0, "invalid_argument", `{name} must be a Discord id (a string of digits), got {typeof(value)}{hint}`)
end

local function header(headers: { [string]: string }?, name: string): string?
	if headers == nil then
		return nil
	end
	for k, v in headers do
		if string.lower(k) == name then
			return v
		end
	end
	return nil
end

-- A Roblox service, or nil outside Roblox (where `game` is not defined).
local function service(name: string): any
	if game == nil then
		return nil
	end
	return game:GetService(name)
end

--[[
Creates a client. `baseUrl` is where the listener is reachable
(`https://host[:port]`, no trailing path); `apiKey` is the secret
(`gk_live_...` or `gk_test_...`), as a string or as a Secret from
HttpService:GetSecret. Throws when called on a Roblox client.
]]
function GuildKey.new(baseUrl: string, apiKey: any, options: Options?): GuildKey
	local opts: Options = options or {}
	if type(baseUrl) ~= "string" or not (string.match(baseUrl, "^https?://[^/]")) then
		error("GuildKey.new: baseUrl must be an http(s) URL such as https://guildkey.example.com", 2)
	end
	local credential: Credential
	if type(apiKey) == "string" then
		if apiKey == "" or string.find(apiKey, "%s") then
			-- Never echo the value: it is a secret.
			error("GuildKey.new: apiKey must be the key's secret (gk_live_... or gk_test_...), without spaces", 2)
		end
		credential = { authorization = "Bearer " .. apiKey, plain = apiKey }
	else
		-- A Roblox Secret (HttpService:GetSecret): it never becomes a string,
		-- RequestAsync puts it in the header itself.
		local found, addPrefix = pcall(function()
			return apiKey.AddPrefix
		end)
		if not found or type(addPrefix) ~= "function" then
			error("GuildKey.new: apiKey must be a string or a Secret from HttpService:GetSecret", 2)
		end
		credential = { authorization = apiKey:AddPrefix("Bearer "), plain = nil }
	end

	local runService = opts.runService or service("RunService")
	if runService ~= nil and runService:IsClient() and not (runService.IsServer ~= nil and runService:IsServer()) then
		error(
			"GuildKey must run on the server (a Script or a ModuleScript required from ServerScriptService): "
				.. "on a client every player could read the API key",
			2
		)
	end

	local http = service("HttpService")
	local request = opts.request
	local encode = opts.jsonEncode
	local decode = opts.jsonDecode
	local sleep = opts.sleep
	if http ~= nil then
		request = request or function(req: HttpRequest): HttpResponse
			return http:RequestAsync(req)
		end
		encode = encode or function(value: any): string
			return http:JSONEncode(value)
		end
		decode = decode or function(text: string): any
			return http:JSONDecode(text)
		end
	end
	if sleep == nil and task ~= nil then
		sleep = function(seconds: number)
			task.wait(seconds)
		end
	end
	if request == nil or encode == nil or decode == nil or sleep == nil then
		error("GuildKey.new: outside Roblox, pass options.request, jsonEncode, jsonDecode and sleep", 2)
	end

	local guildId: string? = nil
	if opts.guildId ~= nil then
		guildId = snowflake(opts.guildId)
		if guildId == nil then
			error("GuildKey.new: options.guildId must be a Discord id (a string of digits)", 2)
		end
	end

	local self = setmetatable({
		_baseUrl = (string.gsub(baseUrl, "/+$", "")),
		_guildId = guildId,
		_cache = {},
		_cacheCount = 0,
		_cacheTtl = opts.cacheTtl or DEFAULT_CACHE_TTL,
		_maxAttempts = math.max(1, opts.maxAttempts or DEFAULT_MAX_ATTEMPTS),
		_baseDelay = opts.baseDelay or DEFAULT_BASE_DELAY,
		_maxDelay = opts.maxDelay or DEFAULT_MAX_DELAY,
		_maxRetryAfter = opts.maxRetryAfter or DEFAULT_MAX_RETRY_AFTER,
		_request = request :: (HttpRequest) -> HttpResponse,
		_encode = encode :: (any) -> string,
		_decode = decode :: (string) -> any,
		_clock = opts.clock or os.clock,
		_sleep = sleep :: (number) -> (),
	}, GuildKey)
	secrets[self] = credential
	return self
end

function GuildKey.__tostring(self: GuildKey): string
	local credential = secrets[self]
	local key = if credential and credential.plain then `key {string.sub(credential.plain, 1, 12)}…` else "a Secret"
	return `GuildKey({self._baseUrl}, {key})`
end

-- One HTTP exchange, read into a result. Also says whether trying again may
-- help, and how long the listener asked to wait.
function GuildKey._once(self: GuildKey, method: string, path: string, body: string?): (Result<any>, boolean, number?)
	local credential = secrets[self]
	local headers: { [string]: any } = { Authorization = if credential then credential.authorization else "" }
	if body ~= nil then
		headers["Content-Type"] = "application/json"
	end
	local sent, response = pcall(self._request, {
		Url = self._baseUrl .. path,
		Method = method,
		Headers = headers,
		Body = body,
	})
	if not sent then
		local message = redact(self, tostring(response))
		-- Retrying cannot enable HTTP requests in Game Settings.
		local disabled = string.find(string.lower(message), "not enabled", 1, true) ~= nil
		return failure(0, "network_error", `{method} {path} failed: {message}`), not disabled, nil
	end
	local res = response :: HttpResponse
	local status = tonumber(res.StatusCode) or 0
	local retryAfter = tonumber(header(res.Headers, "retry-after"))
	local transient = status == 408 or status == 429 or status >= 500

	local parsed, envelope = pcall(self._decode, res.Body or "")
	if not parsed or type(envelope) ~= "table" or type(envelope.success) ~= "boolean" then
		local what = if res.StatusMessage then `HTTP {status} {res.StatusMessage}` else `HTTP {status}`
		return failure(status, "bad_response", `{method} {path}: {what}, not a guildkey answer`, retryAfter),
			transient,
			retryAfter
	end
	if envelope.success then
		local data = if type(envelope.data) == "table" then envelope.data else {}
		return { ok = true, status = status, data = data }, false, nil
	end
	local err = if type(envelope.error) == "table" then envelope.error else {}
	local reason = if type(err.reason) == "string" then err.reason else "bad_response"
	local message = if type(err.message) == "string" then redact(self, err.message) else `HTTP {status}`
	-- The listener already retried Discord; a discord_error carries Discord's
	-- final answer (Missing Permissions, Unknown Member, ...).
	local retry = transient and reason ~= "discord_error"
	return failure(status, reason :: Reason, message, if status == 429 then retryAfter else nil), retry, retryAfter
end

-- Sends a request, retrying 408, 429, 5xx (but discord_error) and network
-- failures up to maxAttempts tries: after Retry-After seconds when the
-- listener sent one, else after baseDelay, 2*baseDelay, ... (at most
-- maxDelay). A Retry-After over maxRetryAfter is returned at once.
function GuildKey._send(self: GuildKey, method: string, path: string, body: { [string]: any }?): Result<any>
	local payload: string? = nil
	if body ~= nil and next(body) ~= nil then
		local encoded, text = pcall(self._encode, body)
		if not encoded then
			return failure(0, "invalid_argument", `could not encode the request body: {text}`)
		end
		payload = text
	end
	local attempt = 1
	while true do
		local result, retry, retryAfter = self:_once(method, path, payload)
		if not retry or attempt >= self._maxAttempts then
			return result
		end
		local wait = math.min(self._maxDelay, self._baseDelay * 2 ^ (attempt - 1))
		if retryAfter ~= nil and retryAfter >= 0 then
			if retryAfter > self._maxRetryAfter then
				return result
			end
			wait = retryAfter
		end
		self._sleep(wait)
		attempt += 1
	end
end

-- The guild id: from the options, or read once from /v1/verify.
function GuildKey._guild(self: GuildKey): (string?, Failure?)
	if self._guildId ~= nil then
		return self._guildId, nil
	end
	local result = self:verify()
	if not result.ok then
		return nil, result :: Failure
	end
	return self._guildId, nil
end

function GuildKey._forget(self: GuildKey, userId: string)
	if self._cache[userId] ~= nil then
		self._cache[userId] = nil
		self._cacheCount -= 1
	end
end

function GuildKey._remember(self: GuildKey, userId: string, data: BanStatus, now: number)
	if self._cacheTtl <= 0 then
		return
	end
	if self._cache[userId] == nil then
		if self._cacheCount >= CACHE_MAX_ENTRIES then
			for id, entry in self._cache do
				if entry.expires <= now then
					self._cache[id] = nil
					self._cacheCount -= 1
				end
			end
			if self._cacheCount >= CACHE_MAX_ENTRIES then
				table.clear(self._cache)
				self._cacheCount = 0
			end
		end
		self._cacheCount += 1
	end
	self._cache[userId] = { expires = now + self._cacheTtl, data = data }
end

--[[
The calling key: its guild, name, scopes, environment and rate limit. Also
learns the guild id the other methods use. Any key may call it.
]]
function GuildKey.verify(self: GuildKey): Result<KeyInfo>
	local result = self:_send("GET", "/v1/verify")
	if result.ok and self._guildId == nil then
		self._guildId = snowflake(result.data.guild_id)
	end
	return result
end

--[[
Whether a Discord user is banned from the key's guild (`bans.read`).
Answers are reused for `cacheTtl` seconds (then `cached = true`); a ban or
unban through this client forgets that user's answer.
]]
function GuildKey.isBanned(self: GuildKey, userId: string): Result<BanStatus>
	local user = snowflake(userId)
	if user == nil then
		return badId("userId", userId)
	end
	local now = self._clock()
	local entry = self._cache[user]
	if entry ~= nil then
		if now < entry.expires then
			return { ok = true, status = 200, data = table.clone(entry.data), cached = true }
		end
		self:_forget(user)
	end
	local guild, err = self:_guild()
	if guild == nil then
		return err :: Failure
	end
	local result = self:_send("GET", `/v1/guilds/{guild}/bans/{user}`)
	if result.ok then
		-- Counted from the answer, not the question: retries may have waited.
		self:_remember(user, table.clone(result.data), self._clock())
	end
	return result
end

--[[
Bans a Discord user from the key's guild (`bans.write`). `options.reason`
goes to Discord's audit log; `options.deleteMessageSeconds` (0–604800)
deletes that much of the user's recent messages. Banning a banned user
succeeds with `changed = false`.
]]
function GuildKey.ban(self: GuildKey, userId: string, options: BanOptions?): Result<BanOutcome>
	local user = snowflake(userId)
	if user == nil then
		return badId("userId", userId)
	end
	local opts: BanOptions = options or {}
	local body: { [string]: any } = {}
	if opts.reason ~= nil then
		if type(opts.reason) ~= "string" then
			return failure(0, "invalid_argument", "options.reason must be a string")
		end
		body.reason = opts.reason
	end
	local seconds = opts.deleteMessageSeconds
	if seconds ~= nil then
		if
			type(seconds) ~= "number"
			or seconds ~= math.floor(seconds)
			or seconds < 0
			or seconds > MAX_DELETE_MESSAGE_SECONDS
		then
			return failure(0, "invalid_argument", "options.deleteMessageSeconds must be a whole number from 0 to 604800")
		end
		body.delete_message_seconds = seconds
	end
	local guild, err = self:_guild()
	if guild == nil then
		return err :: Failure
	end
	local result = self:_send("PUT", `/v1/guilds/{guild}/bans/{user}`, body)
	if result.ok then
		self:_forget(user)
	end
	return result
end

--[[
Lifts a Discord user's ban (`bans.write`). Unbanning a user who is not
banned succeeds with `changed = false`.
]]
function GuildKey.unban(self: GuildKey, userId: string): Result<BanOutcome>
	local user = snowflake(userId)
	if user == nil then
		return badId("userId", userId)
	end
	local guild, err = self:_guild()
	if guild == nil then
		return err :: Failure
	end
	local result = self:_send("DELETE", `/v1/guilds/{guild}/bans/{user}`)
	if result.ok then
		self:_forget(user)
	end
	return result
end

function GuildKey._role(self: GuildKey, method: string, userId: string, roleId: string): Result<RoleOutcome>
	local user = snowflake(userId)
	if user == nil then
		return badId("userId", userId)
	end
	local role = snowflake(roleId)
	if role == nil then
		return badId("roleId", roleId)
	end
	local guild, err = self:_guild()
	if guild == nil then
		return err :: Failure
	end
	return self:_send(method, `/v1/guilds/{guild}/members/{user}/roles/{role}`)
end

--[[
Gives a guild member a role (`roles.write`); the role must sit below the
bot's highest role. Adding a role the member has succeeds with
`changed = false`.
]]
function GuildKey.addRole(self: GuildKey, userId: string, roleId: string): Result<RoleOutcome>
	return self:_role("PUT", userId, roleId)
end

--[[
Takes a role from a guild member (`roles.write`).
]]
function GuildKey.removeRole(self: GuildKey, userId: string, roleId: string): Result<RoleOutcome>
	return self:_role("DELETE", userId, roleId)
end

return GuildKey
