--!strict
--[[
GuildKey: a Roblox server-side client for the guildkey HTTP API (a ModuleScript).

	local GuildKey = require(game:GetService("ServerScriptService").GuildKey)
	local gk = GuildKey.new("https://guildkey.example.com", HttpService:GetSecret("guildkey"))
	local result = gk:isBanned(player)
	if result.ok and result.data.banned then player:Kick("Banned") end

Every method returns a result table instead of throwing (see `Result<T>`
below): `{ ok = true, status, data }` or
`{ ok = false, status, reason, message, retryAfter? }`, with the listener's
X-RateLimit-* headers as `rateLimit` whenever an answer came back. Only
`GuildKey.new` throws, for mistakes in the code that calls it (a bad URL, no
key, running on a Roblox client).

Members are named the way the listener takes them: a Player (or anything with
a numeric UserId) or a number is a Roblox user (sent as `roblox:<UserId>`,
the listener finds the Discord account through the guild's linker); a string
of digits is a Discord user id (larger than a Luau number holds exactly, so
always a string); a string `roblox:<UserId>` is sent as it is. Role and guild
ids are Discord ids: strings of digits (small whole numbers are accepted too).

isBanned calls made within `batchWindow` seconds of each other (a join burst)
share one bulk request (POST /v1/guilds/{g}/bans/check, up to 100 ids); each
caller still gets its own result. `syncBans` loads the guild's whole ban list
so isBanned answers from memory, and `subscribeBans` keeps that list current
from the bans guildkey pushes through MessagingService, kicking a banned
player who is in this server. Every HTTP request counts against a local
budget (`budgetPerMinute`, default 400) kept under Roblox's 500 requests a
minute per server; past it, calls fail at once with `client_budget`.

The API key is kept out of the object (a `print(gk)` in Studio shows no
secret) and out of every message this module produces. Keep it on the server,
best in the experience's Secrets store (pass `HttpService:GetSecret(name)` as
the key): see README.md beside this file.

Outside Roblox (tests, Lune, ...), pass `request`, `jsonEncode`, `jsonDecode`,
`sleep`, `clock` and `spawn` in the options; inside Roblox they default to
HttpService:RequestAsync, HttpService:JSONEncode/JSONDecode, task.wait,
os.clock and task.spawn.
]]

-- Machine-readable reasons from the listener: exactly the README's Reasons
-- and the OpenAPI document's ErrorBody.reason (a test in src/http/reason.rs
-- holds the three equal, so add a reason there, not only here).
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

-- This client's own reasons, for calls that never got a guildkey answer
-- (kept apart from Reason: the listener never sends these; the same test
-- holds them apart from its list).
export type ClientReason =
	-- The request never reached the listener, or no answer came back
	-- (status 0): HTTP requests disabled, DNS, TLS, connection refused.
	"network_error"
	-- An answer came back that is not guildkey's JSON envelope (a proxy's
	-- HTML error page, say); status is the HTTP status.
	| "bad_response"
	-- An argument was wrong (an id that is not a Discord or Roblox id);
	-- nothing was sent (status 0).
	| "invalid_argument"
	-- This server's own request budget (options.budgetPerMinute, under
	-- Roblox's 500 HTTP requests a minute per server) is spent: nothing was
	-- sent (status 0); retryAfter says when a request is free again.
	| "client_budget"

-- The listener's X-RateLimit-* headers: the key's requests per minute, what
-- is left of them, and seconds until the budget is full again. Shared by
-- every server of the experience that uses the key.
export type RateLimit = {
	limit: number?,
	remaining: number?,
	reset: number?,
}

export type Success<T> = {
	ok: true,
	-- The HTTP status (200); 0 for subscribeBans, which makes no request.
	status: number,
	-- The envelope's `data`, as the listener sent it (snake_case fields).
	data: T,
	-- True when isBanned answered from this client's cache.
	cached: boolean?,
	-- True when isBanned answered from the ban list in memory (syncBans,
	-- or a ban pushed through subscribeBans): no request was made.
	fromBanList: boolean?,
	-- The listener's X-RateLimit-* headers, when a request was made.
	rateLimit: RateLimit?,
}

export type Failure = {
	ok: false,
	-- The HTTP status, or 0 when no HTTP answer came back. For one id of a
	-- bulk check that the listener could not answer, the bulk call's (200).
	status: number,
	reason: Reason | ClientReason,
	-- For people (logs, the developer console); never contains the key.
	message: string,
	-- On 429 rate_limited: seconds the listener asked to wait (Retry-After);
	-- on client_budget: seconds until this server may send again.
	retryAfter: number?,
	rateLimit: RateLimit?,
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

-- GET /v1/guilds/{g}/bans/{u}, or one id's answer in a bulk check.
export type BanStatus = {
	banned: boolean,
	-- The ban's reason: only on a check made alone (GET), not in a bulk
	-- check nor from the ban list.
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

-- syncBans
export type SyncOutcome = {
	-- Bans on the list (each Discord account once).
	bans: number,
	-- Of them, those whose Roblox id the listener knows.
	roblox: number,
	-- Requests it took.
	pages: number,
}

export type SyncOptions = {
	-- Bans per page (1–1000, default 1000).
	pageSize: number?,
	-- After a sync an id not on the list is answered "not banned" from
	-- memory; true asks the listener for those instead (a Roblox id whose
	-- Discord account the listener has not resolved yet is not on the list).
	askOnMiss: boolean?,
}

-- One event of a pushed message (guildkey's MessagingService envelope, v1).
export type BanEvent = {
	roblox_id: number,
	action: "ban" | "unban",
	-- "discord" (made in Discord) or "api" (made with a key, key_prefix says which).
	origin: string?,
	key_prefix: string?,
	at: string?,
}

-- subscribeBans
export type Subscription = {
	topic: string,
	-- What SubscribeAsync returned: :Disconnect() stops the subscription.
	connection: any,
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
	-- Seconds isBanned waits for others to share one bulk request (default
	-- 0.1; 0 sends each check at once, alone).
	batchWindow: number?,
	-- HTTP requests this client sends in any 60 seconds (default 400; 0 = no
	-- limit). Roblox allows a server 500 in all, for every script.
	budgetPerMinute: number?,
	-- Tries per call, the first included (default 4).
	maxAttempts: number?,
	-- First backoff delay in seconds, doubled per retry (default 0.5) ...
	baseDelay: number?,
	-- ... up to this many seconds (default 8).
	maxDelay: number?,
	-- A 429 asking to wait longer than this many seconds is returned at once
	-- instead of waited for (default 30).
	maxRetryAfter: number?,
	-- What a player banned through a pushed message is shown when kicked.
	kickMessage: string?,
	-- Called (in a protected call) for each pushed event once applied, with
	-- the player who was kicked, if one was in this server.
	onBanEvent: ((event: BanEvent, kicked: any?) -> ())?,
	request: ((HttpRequest) -> HttpResponse)?,
	jsonEncode: ((any) -> string)?,
	jsonDecode: ((string) -> any)?,
	-- Seconds, monotonic; for the cache and the budget.
	clock: (() -> number)?,
	-- Waits this many seconds (yielding); for retries and the batch window.
	sleep: ((number) -> ())?,
	-- Resumes a waiting thread with a value (task.spawn); for the batch.
	spawn: ((thread, ...any) -> ())?,
	-- Something with :IsClient() and :IsServer() (default: RunService).
	runService: any?,
}

local DEFAULT_CACHE_TTL = 5
local DEFAULT_BATCH_WINDOW = 0.1
-- Roblox allows a game server 500 HTTP requests a minute (all scripts
-- together): leave room for the others.
local DEFAULT_BUDGET_PER_MINUTE = 400
local BUDGET_WINDOW = 60
local DEFAULT_MAX_ATTEMPTS = 4
local DEFAULT_BASE_DELAY = 0.5
local DEFAULT_MAX_DELAY = 8
local DEFAULT_MAX_RETRY_AFTER = 30
local DEFAULT_KICK_MESSAGE = "You are banned from this experience's Discord server."
-- The listener's default MessagingService topic for pushed bans.
local DEFAULT_TOPIC = "guildkey-bans"
-- MessagingService's limit on a topic's length.
local MAX_TOPIC_LENGTH = 80
-- Ids in one bulk check (the listener refuses more).
local MAX_BULK = 100
-- Bans per export page (the listener's maximum).
local MAX_PAGE = 1000
-- Entries kept before expired ones are swept (one per recently seen user).
local CACHE_MAX_ENTRIES = 1000
-- Larger whole numbers are not exact in a Luau number; Roblox ids go up to it.
local MAX_EXACT_INTEGER = 2 ^ 53
local MAX_ROBLOX_ID_TEXT = "9007199254740992"
local MAX_DELETE_MESSAGE_SECONDS = 604800

type CacheEntry = { expires: number, data: BanStatus }

-- isBanned calls waiting for one bulk request: the members in request
-- order (each once) and the threads waiting, with the member each asked for.
type Batch = {
	members: { string },
	seen: { [string]: boolean },
	waiters: { { member: string, thread: thread } },
}

type Fields = {
	_baseUrl: string,
	_guildId: string?,
	_cache: { [string]: CacheEntry },
	_cacheCount: number,
	_cacheTtl: number,
	_batchWindow: number,
	_batch: Batch?,
	_budget: number,
	-- When each of the last `_budget` requests was sent (a ring).
	_sent: { number },
	_sentNext: number,
	_rateLimit: RateLimit?,
	-- The ban list in memory: members ("<discord id>", "roblox:<id>") known
	-- banned, from syncBans and pushed bans.
	_banned: { [string]: boolean },
	-- "roblox:<id>" -> the Discord id it was exported with (to unban both).
	_discordOf: { [string]: string },
	-- After syncBans: ids not on the list are not banned.
	_synced: boolean,
	_askOnMiss: boolean,
	-- Pushed events that arrive while a sync is under way, replayed on its list.
	_pushedDuringSync: { BanEvent }?,
	_kickMessage: string,
	_onBanEvent: ((BanEvent, any?) -> ())?,
	_maxAttempts: number,
	_baseDelay: number,
	_maxDelay: number,
	_maxRetryAfter: number,
	_request: (HttpRequest) -> HttpResponse,
	_encode: (any) -> string,
	_decode: (string) -> any,
	_clock: () -> number,
	_sleep: (number) -> (),
	_spawn: (thread, ...any) -> (),
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

local function failure(
	status: number,
	reason: Reason | ClientReason,
	message: string,
	retryAfter: number?,
	rateLimit: RateLimit?
): Failure
	return {
		ok = false,
		status = status,
		reason = reason,
		message = message,
		retryAfter = retryAfter,
		rateLimit = rateLimit,
	}
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

-- A Roblox user id (a whole number from 1 to 2^53), or nil.
local function robloxId(value: any): number?
	if type(value) == "number" and value >= 1 and value <= MAX_EXACT_INTEGER and value == math.floor(value) then
		return value
	end
	return nil
end

-- A member as the listener names it: "<discord id>" or "roblox:<UserId>".
local function member(value: any): string?
	local kind = type(value)
	if kind == "string" then
		local digits = string.match(value, "^roblox:([1-9]%d*)$")
		if digits ~= nil then
			-- Compared as text: past 2^53 a number would round into range.
			local inRange = #digits < 16 or (#digits == 16 and digits <= MAX_ROBLOX_ID_TEXT)
			return if inRange then value else nil
		end
		return snowflake(value)
	elseif kind == "number" then
		local id = robloxId(value)
		return if id then string.format("roblox:%d", id) else nil
	elseif kind == "table" or kind == "userdata" then
		-- A Player: reading a missing property of an Instance throws.
		local found, userId = pcall(function()
			return value.UserId
		end)
		local id = if found then robloxId(userId) else nil
		return if id then string.format("roblox:%d", id) else nil
	end
	return nil
end

local function badId(name: string, value: any): Failure
	local hint = if type(value) == "number"
		then " (pass Discord ids as strings: a number this large is not exact in Luau)"
		else ""
	return failure(0, "invalid_argument", `{name} must be a Discord id (a string of digits), got {typeof(value)}{hint}`)
end

local function badMember(value: any): Failure
	return failure(
		0,
		"invalid_argument",
		"the user must be a Player, a Roblox UserId (a number), a Discord id (a string of digits) "
			.. `or "roblox:<UserId>", got {typeof(value)}`
	)
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

-- The X-RateLimit-* headers, or nil when the answer has none.
local function rateLimitOf(headers: { [string]: string }?): RateLimit?
	local limit = tonumber(header(headers, "x-ratelimit-limit"))
	local remaining = tonumber(header(headers, "x-ratelimit-remaining"))
	local reset = tonumber(header(headers, "x-ratelimit-reset"))
	if limit == nil and remaining == nil and reset == nil then
		return nil
	end
	return { limit = limit, remaining = remaining, reset = reset }
end

-- A copy of a result for one caller (each gets tables of its own).
local function copy(result: Result<any>): Result<any>
	local out = table.clone(result) :: any
	if type(out.data) == "table" then
		out.data = table.clone(out.data)
	end
	return out
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
	local spawn = opts.spawn
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
	if task ~= nil then
		sleep = sleep or function(seconds: number)
			task.wait(seconds)
		end
		spawn = spawn or task.spawn
	end
	if request == nil or encode == nil or decode == nil or sleep == nil then
		error("GuildKey.new: outside Roblox, pass options.request, jsonEncode, jsonDecode and sleep", 2)
	end
	spawn = spawn or function(thread: thread, ...: any)
		local resumed, err = coroutine.resume(thread, ...)
		if not resumed then
			error(err, 0)
		end
	end

	local guildId: string? = nil
	if opts.guildId ~= nil then
		guildId = snowflake(opts.guildId)
		if guildId == nil then
			error("GuildKey.new: options.guildId must be a Discord id (a string of digits)", 2)
		end
	end
	local budget = opts.budgetPerMinute or DEFAULT_BUDGET_PER_MINUTE
	if type(budget) ~= "number" or budget < 0 or budget ~= math.floor(budget) then
		error("GuildKey.new: options.budgetPerMinute must be a whole number (0 = no limit)", 2)
	end
	local kickMessage = opts.kickMessage or DEFAULT_KICK_MESSAGE
	if type(kickMessage) ~= "string" then
		error("GuildKey.new: options.kickMessage must be a string", 2)
	end

	local self = setmetatable({
		_baseUrl = (string.gsub(baseUrl, "/+$", "")),
		_guildId = guildId,
		_cache = {},
		_cacheCount = 0,
		_cacheTtl = opts.cacheTtl or DEFAULT_CACHE_TTL,
		_batchWindow = opts.batchWindow or DEFAULT_BATCH_WINDOW,
		_batch = nil,
		_budget = budget,
		_sent = {},
		_sentNext = 1,
		_rateLimit = nil,
		_banned = {},
		_discordOf = {},
		_synced = false,
		_askOnMiss = false,
		_pushedDuringSync = nil,
		_kickMessage = kickMessage,
		_onBanEvent = opts.onBanEvent,
		_maxAttempts = math.max(1, opts.maxAttempts or DEFAULT_MAX_ATTEMPTS),
		_baseDelay = opts.baseDelay or DEFAULT_BASE_DELAY,
		_maxDelay = opts.maxDelay or DEFAULT_MAX_DELAY,
		_maxRetryAfter = opts.maxRetryAfter or DEFAULT_MAX_RETRY_AFTER,
		_request = request :: (HttpRequest) -> HttpResponse,
		_encode = encode :: (any) -> string,
		_decode = decode :: (string) -> any,
		_clock = opts.clock or os.clock,
		_sleep = sleep :: (number) -> (),
		_spawn = spawn :: (thread, ...any) -> (),
	}, GuildKey)
	secrets[self] = credential
	return self
end

function GuildKey.__tostring(self: GuildKey): string
	local credential = secrets[self]
	local key = if credential and credential.plain then `key {string.sub(credential.plain, 1, 12)}…` else "a Secret"
	return `GuildKey({self._baseUrl}, {key})`
end

-- Takes one request from the local budget: nil when it may be sent now,
-- else the seconds until one may. At most `_budget` requests in any
-- BUDGET_WINDOW seconds: the ring holds when each of the last ones was sent.
function GuildKey._spend(self: GuildKey): number?
	if self._budget <= 0 then
		return nil
	end
	local now = self._clock()
	local oldest = self._sent[self._sentNext]
	if oldest ~= nil and now - oldest < BUDGET_WINDOW then
		return BUDGET_WINDOW - (now - oldest)
	end
	self._sent[self._sentNext] = now
	self._sentNext = self._sentNext % self._budget + 1
	return nil
end

--[[
This server's local budget: `{ limit, remaining, reset }` (requests a
minute, left now, and seconds until the oldest counted one stops counting),
and the last X-RateLimit-* headers the listener sent (`listener`, nil until a
request was answered).
]]
function GuildKey.budget(self: GuildKey): { limit: number, remaining: number, reset: number, listener: RateLimit? }
	local now = self._clock()
	local used, oldest = 0, math.huge
	for _, at in self._sent do
		if now - at < BUDGET_WINDOW then
			used += 1
			oldest = math.min(oldest, at)
		end
	end
	local reset = if used > 0 then BUDGET_WINDOW - (now - oldest) else 0
	return {
		limit = self._budget,
		remaining = if self._budget > 0 then self._budget - used else math.huge,
		reset = reset,
		listener = self._rateLimit,
	}
end

-- One HTTP exchange, read into a result. Also says whether trying again may
-- help, and how long the listener asked to wait.
function GuildKey._once(self: GuildKey, method: string, path: string, body: string?): (Result<any>, boolean, number?)
	local wait = self:_spend()
	if wait ~= nil then
		local message = `{method} {path} not sent: this server's budget of {self._budget} requests a minute `
			.. `(options.budgetPerMinute; Roblox allows 500) is spent, one is free in {string.format("%.1f", wait)} s`
		return failure(0, "client_budget", message, wait), false, nil
	end
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
	local rateLimit = rateLimitOf(res.Headers)
	if rateLimit ~= nil then
		self._rateLimit = rateLimit
	end

	local parsed, envelope = pcall(self._decode, res.Body or "")
	if not parsed or type(envelope) ~= "table" or type(envelope.success) ~= "boolean" then
		local what = if res.StatusMessage then `HTTP {status} {res.StatusMessage}` else `HTTP {status}`
		return failure(status, "bad_response", `{method} {path}: {what}, not a guildkey answer`, retryAfter, rateLimit),
			transient,
			retryAfter
	end
	if envelope.success then
		local data = if type(envelope.data) == "table" then envelope.data else {}
		return { ok = true, status = status, data = data, rateLimit = rateLimit }, false, nil
	end
	local err = if type(envelope.error) == "table" then envelope.error else {}
	local reason = if type(err.reason) == "string" then err.reason else "bad_response"
	local message = if type(err.message) == "string" then redact(self, err.message) else `HTTP {status}`
	-- The listener already retried Discord; a discord_error carries Discord's
	-- final answer (Missing Permissions, Unknown Member, ...). A linker_error
	-- likewise: the listener asked the server's account linker (or the server
	-- has none), and asking again at once changes nothing.
	local retry = transient and reason ~= "discord_error" and reason ~= "linker_error"
	return failure(status, reason :: Reason, message, if status == 429 then retryAfter else nil, rateLimit),
		retry,
		retryAfter
end

-- Sends a request, retrying 408, 429, 5xx (but discord_error and
-- linker_error) and network
-- failures up to maxAttempts tries: after Retry-After seconds when the
-- listener sent one, else after baseDelay, 2*baseDelay, ... (at most
-- maxDelay). A Retry-After over maxRetryAfter is returned at once. Each try
-- counts against the local budget.
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

-- An answer without a request: from the ban list in memory or the cache.
function GuildKey._known(self: GuildKey, id: string): Result<BanStatus>?
	if self._banned[id] then
		return { ok = true, status = 200, data = { banned = true }, fromBanList = true }
	end
	if self._synced and not self._askOnMiss then
		return { ok = true, status = 200, data = { banned = false }, fromBanList = true }
	end
	local now = self._clock()
	local entry = self._cache[id]
	if entry ~= nil then
		if now < entry.expires then
			return { ok = true, status = 200, data = table.clone(entry.data), cached = true }
		end
		self:_forget(id)
	end
	return nil
end

-- One member checked alone: GET /v1/guilds/{g}/bans/{member}.
function GuildKey._checkOne(self: GuildKey, guild: string, id: string): Result<BanStatus>
	local result = self:_send("GET", `/v1/guilds/{guild}/bans/{id}`)
	if result.ok then
		-- Counted from the answer, not the question: retries may have waited.
		self:_remember(id, table.clone(result.data), self._clock())
	end
	return result
end

-- Members checked together: one bulk request (a lone member: the GET,
-- which also says the ban's reason). An answer for each member.
function GuildKey._checkMany(self: GuildKey, guild: string, members: { string }): { [string]: Result<BanStatus> }
	local answers: { [string]: Result<BanStatus> } = {}
	if #members == 1 then
		answers[members[1]] = self:_checkOne(guild, members[1])
		return answers
	end
	local result = self:_send("POST", `/v1/guilds/{guild}/bans/check`, { user_ids = members })
	if not result.ok then
		for _, id in members do
			answers[id] = result
		end
		return answers
	end
	local now = self._clock()
	local rows = if type(result.data.results) == "table" then result.data.results else {}
	for _, row in rows do
		if type(row) == "table" and type(row.user_id) == "string" then
			local id = row.user_id
			if type(row.error) == "table" then
				local reason = if type(row.error.reason) == "string" then row.error.reason else "bad_response"
				local message = if type(row.error.message) == "string"
					then redact(self, row.error.message)
					else `no answer for {id}`
				answers[id] = failure(result.status, reason :: Reason, message, nil, result.rateLimit)
			elseif type(row.banned) == "boolean" then
				local data: BanStatus = { banned = row.banned }
				answers[id] = { ok = true, status = result.status, data = data, rateLimit = result.rateLimit }
				self:_remember(id, table.clone(data), now)
			end
		end
	end
	for _, id in members do
		if answers[id] == nil then
			answers[id] = failure(
				result.status,
				"bad_response",
				`POST /v1/guilds/{guild}/bans/check: no answer for {id}`,
				nil,
				result.rateLimit
			)
		end
	end
	return answers
end

--[[
Whether a user is banned from the key's guild (`bans.read`): a Player (or a
Roblox UserId as a number, or "roblox:<UserId>"), answered through the
guild's linker, or a Discord id (a string of digits).

Answers come from the ban list in memory when there is one (syncBans, pushed
bans: `fromBanList = true`), else from the cache for `cacheTtl` seconds
(`cached = true`), else from the listener. Checks made within `batchWindow`
seconds of each other (players joining together) share one bulk request of
up to 100 ids; each caller gets its own result, and an id the listener
could not answer (`not_linked`, `linker_error`, ...) fails only its own
caller. It yields (call it from a thread that may: event handlers do).
]]
function GuildKey.isBanned(self: GuildKey, user: any): Result<BanStatus>
	local id = member(user)
	if id == nil then
		return badMember(user)
	end
	local known = self:_known(id)
	if known ~= nil then
		return known
	end
	local guild, err = self:_guild()
	if guild == nil then
		return err :: Failure
	end
	-- A thread that cannot yield (a metamethod, a test's main chunk) cannot
	-- wait for others: it asks alone.
	if self._batchWindow <= 0 or not coroutine.isyieldable() then
		return self:_checkOne(guild, id)
	end
	local batch = self._batch
	if batch ~= nil then
		if not batch.seen[id] then
			batch.seen[id] = true
			table.insert(batch.members, id)
			if #batch.members >= MAX_BULK then
				-- Full: later callers start the next batch.
				self._batch = nil
			end
		end
		table.insert(batch.waiters, { member = id, thread = coroutine.running() })
		-- The batch's first caller resumes this thread with the answer.
		return coroutine.yield()
	end
	local mine: Batch = { members = { id }, seen = { [id] = true }, waiters = {} }
	self._batch = mine
	self._sleep(self._batchWindow)
	if self._batch == mine then
		self._batch = nil
	end
	-- Whatever happens, every waiting caller is resumed with an answer.
	local flushed, answers = pcall(self._checkMany, self, guild, mine.members)
	if not flushed then
		local broken = failure(0, "bad_response", `ban check failed: {redact(self, tostring(answers))}`)
		answers = {}
		for _, m in mine.members do
			answers[m] = broken
		end
	end
	for _, waiter in mine.waiters do
		self._spawn(waiter.thread, copy(answers[waiter.member]))
	end
	return copy(answers[id])
end

--[[
Loads the guild's ban list into memory (`bans.read`): GET
/v1/guilds/{g}/bans, page after page. From then on isBanned answers from
memory with no request: banned when the Discord id, or the Roblox id the
listener knows for it, is on the list, and not banned otherwise (or asks the
listener for those, with `askOnMiss`). A failed sync keeps the list held
before. Call it again to refresh; subscribeBans keeps it current between.
]]
function GuildKey.syncBans(self: GuildKey, options: SyncOptions?): Result<SyncOutcome>
	local opts: SyncOptions = options or {}
	local pageSize = opts.pageSize or MAX_PAGE
	if type(pageSize) ~= "number" or pageSize < 1 or pageSize > MAX_PAGE or pageSize ~= math.floor(pageSize) then
		return failure(0, "invalid_argument", "options.pageSize must be a whole number from 1 to 1000")
	end
	local guild, err = self:_guild()
	if guild == nil then
		return err :: Failure
	end
	local banned: { [string]: boolean } = {}
	local discordOf: { [string]: string } = {}
	local bans, roblox, pages = 0, 0, 0
	local after: string? = nil
	local pushed: { BanEvent } = {}
	self._pushedDuringSync = pushed
	local outcome: Result<any>
	while true do
		local path = `/v1/guilds/{guild}/bans?limit={pageSize}`
		if after ~= nil then
			path ..= `&after={after}`
		end
		local page = self:_send("GET", path)
		pages += 1
		if not page.ok then
			outcome = page
			break
		end
		local rows = page.data.bans
		if type(rows) ~= "table" then
			outcome = failure(page.status, "bad_response", `GET {path}: no bans in the answer`, nil, page.rateLimit)
			break
		end
		for _, row in rows do
			local discordId = if type(row) == "table" then snowflake(row.user_id) else nil
			if discordId ~= nil and type(row.user_id) == "string" then
				if not banned[discordId] then
					bans += 1
				end
				banned[discordId] = true
				local rid = robloxId(row.roblox_id)
				if rid ~= nil then
					local key = string.format("roblox:%d", rid)
					if not banned[key] then
						roblox += 1
					end
					banned[key] = true
					discordOf[key] = discordId
				end
			end
		end
		local nextAfter = page.data.next_after
		if nextAfter == nil then
			local data: SyncOutcome = { bans = bans, roblox = roblox, pages = pages }
			outcome = { ok = true, status = page.status, data = data, rateLimit = page.rateLimit }
			break
		end
		if type(nextAfter) ~= "string" or nextAfter == after then
			local message = `GET {path}: next_after does not move on`
			outcome = failure(page.status, "bad_response", message, nil, page.rateLimit)
			break
		end
		after = nextAfter
	end
	self._pushedDuringSync = nil
	if outcome.ok then
		self._banned = banned
		self._discordOf = discordOf
		self._synced = true
		self._askOnMiss = opts.askOnMiss == true
		table.clear(self._cache)
		self._cacheCount = 0
		-- Bans pushed while the pages came in may be missing from them.
		for _, event in pushed do
			self:_apply(event)
		end
	end
	return outcome
end

-- A pushed event applied to the ban list in memory and the cache.
function GuildKey._apply(self: GuildKey, event: BanEvent)
	local key = string.format("roblox:%d", event.roblox_id)
	self:_forget(key)
	if event.action == "ban" then
		self._banned[key] = true
	else
		self._banned[key] = nil
		local discordId = self._discordOf[key]
		if discordId ~= nil then
			self._banned[discordId] = nil
			self._discordOf[key] = nil
			self:_forget(discordId)
		end
	end
	if self._pushedDuringSync ~= nil then
		table.insert(self._pushedDuringSync, event)
	end
end

-- The events of one pushed message, or nil when it is not guildkey's v1
-- envelope for this guild. Malformed events are left out.
function GuildKey._events(self: GuildKey, message: any): { BanEvent }?
	if type(message) ~= "table" then
		return nil
	end
	local envelope = message.Data
	if type(envelope) == "string" then
		local parsed, decoded = pcall(self._decode, envelope)
		envelope = if parsed then decoded else nil
	end
	if type(envelope) ~= "table" or envelope.v ~= 1 or type(envelope.events) ~= "table" then
		return nil
	end
	if self._guildId ~= nil and envelope.guild_id ~= self._guildId then
		return nil
	end
	local events: { BanEvent } = {}
	for _, event in envelope.events do
		if
			type(event) == "table"
			and robloxId(event.roblox_id) ~= nil
			and (event.action == "ban" or event.action == "unban")
		then
			table.insert(events, {
				roblox_id = event.roblox_id,
				action = event.action,
				origin = if type(event.origin) == "string" then event.origin else nil,
				key_prefix = if type(event.key_prefix) == "string" then event.key_prefix else nil,
				at = if type(event.at) == "string" then event.at else nil,
			})
		end
	end
	return events
end

-- One pushed message: each ban goes on the list and kicks its player if in
-- this server; each unban comes off it. Never throws: a bad message is
-- dropped.
function GuildKey._onPush(self: GuildKey, players: any, message: any)
	local parsed, events = pcall(self._events, self, message)
	if not parsed or events == nil then
		return
	end
	for _, event in (events :: { BanEvent }) do
		self:_apply(event)
		local kicked: any = nil
		if event.action == "ban" then
			local found, player = pcall(function()
				return players:GetPlayerByUserId(event.roblox_id)
			end)
			if found and player ~= nil then
				if pcall(function()
					player:Kick(self._kickMessage)
				end) then
					kicked = player
				end
			end
		end
		if self._onBanEvent ~= nil then
			pcall(self._onBanEvent, event, kicked)
		end
	end
end

--[[
Subscribes this server to the bans guildkey pushes (`guildkey roblox push
set --mode publish`): `MessagingService:SubscribeAsync(topic)` (default
topic "guildkey-bans"). A pushed ban of a player in this server kicks them
(`kickMessage`) and puts their Roblox id on the ban list in memory, so a
rejoin is refused with no request; an unban takes it off. Messages that are
not guildkey's v1 envelope for this key's guild are ignored. Learns the guild
first (one verify request) when the options did not give it.
]]
function GuildKey.subscribeBans(self: GuildKey, messaging: any, players: any, topic: string?): Result<Subscription>
	local name = topic or DEFAULT_TOPIC
	if type(name) ~= "string" or #name == 0 or #name > MAX_TOPIC_LENGTH then
		return failure(0, "invalid_argument", "topic must be a string of 1 to 80 characters")
	end
	if players == nil then
		return failure(0, "invalid_argument", "pass the Players service (game:GetService(\"Players\"))")
	end
	-- The guild first: messages naming another guild are not this key's.
	local guild, err = self:_guild()
	if guild == nil then
		return err :: Failure
	end
	local subscribed, connection = pcall(function()
		return messaging:SubscribeAsync(name, function(message)
			self:_onPush(players, message)
		end)
	end)
	if not subscribed then
		return failure(0, "network_error", `MessagingService:SubscribeAsync({name}) failed: {connection}`)
	end
	return { ok = true, status = 0, data = { topic = name, connection = connection } }
end

--[[
Bans a user from the key's guild (`bans.write`): a Discord id, or a Roblox
user (a Player, a UserId or "roblox:<UserId>", linked to exactly one Discord
account). `options.reason` goes to Discord's audit log;
`options.deleteMessageSeconds` (0–604800) deletes that much of the user's
recent messages. Banning a banned user succeeds with `changed = false`.
]]
function GuildKey.ban(self: GuildKey, user: any, options: BanOptions?): Result<BanOutcome>
	local id = member(user)
	if id == nil then
		return badMember(user)
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
	local result = self:_send("PUT", `/v1/guilds/{guild}/bans/{id}`, body)
	if result.ok then
		self:_forget(id)
		if result.data.banned == true and result.data.dry_run ~= true then
			self._banned[id] = true
		end
	end
	return result
end

--[[
Lifts a user's ban (`bans.write`); the user as for ban. Unbanning a user who
is not banned succeeds with `changed = false`.
]]
function GuildKey.unban(self: GuildKey, user: any): Result<BanOutcome>
	local id = member(user)
	if id == nil then
		return badMember(user)
	end
	local guild, err = self:_guild()
	if guild == nil then
		return err :: Failure
	end
	local result = self:_send("DELETE", `/v1/guilds/{guild}/bans/{id}`)
	if result.ok then
		self:_forget(id)
		self._banned[id] = nil
	end
	return result
end

function GuildKey._role(self: GuildKey, method: string, user: any, roleId: string): Result<RoleOutcome>
	local id = member(user)
	if id == nil then
		return badMember(user)
	end
	local role = snowflake(roleId)
	if role == nil then
		return badId("roleId", roleId)
	end
	local guild, err = self:_guild()
	if guild == nil then
		return err :: Failure
	end
	return self:_send(method, `/v1/guilds/{guild}/members/{id}/roles/{role}`)
end

--[[
Gives a guild member a role (`roles.write`); the member as for ban, the role
a Discord id below the bot's highest role. Adding a role the member has
succeeds with `changed = false`.
]]
function GuildKey.addRole(self: GuildKey, user: any, roleId: string): Result<RoleOutcome>
	return self:_role("PUT", user, roleId)
end

--[[
Takes a role from a guild member (`roles.write`).
]]
function GuildKey.removeRole(self: GuildKey, user: any, roleId: string): Result<RoleOutcome>
	return self:_role("DELETE", user, roleId)
end

return GuildKey
