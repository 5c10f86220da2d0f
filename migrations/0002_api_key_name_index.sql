-- Resolving a key by its exact name (`/apikey revoke <name>`, `guildkey keys
-- revoke <name>`): together with the primary key and api_key_prefix, the
-- lookup by id, prefix or name is three index searches instead of a scan of
-- every key (a quarter of a second with a million keys).
create index api_key_name on api_key (name);
