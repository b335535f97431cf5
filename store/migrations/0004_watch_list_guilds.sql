-- hubwatch store, schema version 4: a watch list per Discord server (guild).
--
-- Before this, one list served every server the bot was in: a manager of another server listed
-- and removed the operator's entries. guild_id 0 holds the entries from before this migration and
-- those added from the command line (`index seed`): the operator's, which the configured server
-- (discord.guild_id) sees beside its own; any other server sees only what its managers added.
CREATE TABLE watch_list_by_guild (
    guild_id INTEGER NOT NULL DEFAULT 0,
    kind     TEXT NOT NULL CHECK (kind IN ('reference', 'author')),
    value    TEXT NOT NULL,
    added_by TEXT,
    note     TEXT,
    added_at TEXT NOT NULL,
    PRIMARY KEY (guild_id, kind, value)
);

INSERT INTO watch_list_by_guild (guild_id, kind, value, added_by, note, added_at)
    SELECT 0, kind, value, added_by, note, added_at FROM watch_list;

DROP TABLE watch_list;

ALTER TABLE watch_list_by_guild RENAME TO watch_list;
