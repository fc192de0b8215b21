//! The Lua scripts Redis runs for the store, each alone (Redis runs a script
//! atomically): appending a message, reading messages back with their bodies, moving
//! a read marker.
//!
//! A room's order is its stream (entry `S-0` for seq `S`); the JSON of each message
//! (its body) is a field of the room's `msgs` hash, where it can be replaced: a stream
//! entry cannot be changed, and one deleted with `XDEL` keeps its bytes in the stream's
//! node (and in `DUMP`, snapshots and replicas) until the whole node goes. Entries
//! written by natter before bodies moved to the hash hold their body inline (field `m`);
//! every script reads those too. Pure text, no I/O: [`super::RedisStore`] runs them.

use redis::Script;

/// Appends a message, or an edit or delete event with the change it makes:
/// de-duplicates, checks the change, numbers, stores its order and body, rewrites the
/// changed message, trims, atomically. Seq, the stream entry and the body are written
/// together, so the stream never misses a seq that was handed out and never lists one
/// without its body; a change is checked against the message as it is when it is made,
/// whichever instance made the one before.
///
/// A retry (ARGV[6] == '1', sent when the connection broke after the first attempt was
/// written) first looks for the first attempt's body: the JSON is the same byte for
/// byte (its `ts` and `uid` included), so finding it means that attempt was stored.
/// With a client id the dedup key points at it; without one the newest ARGV[7] entries
/// are compared.
///
/// A change (ARGV[9] `edit`, `delete` or `react` of message ARGV[10] by user ARGV[11],
/// a moderator when ARGV[12] == '1') needs a `msg` that is not deleted, by that user for
/// an edit, by that user or a moderator for a delete, by anyone for a reaction. A
/// reaction toggles the user's emoji (the event's `emoji`, its suffix ending
/// `"on":true}`) in the message's `reactions` field as `react` below does; when that
/// takes it off the event is stored ending `"on":false}` and the answer is {8, seq};
/// {7, 0} when the message holds all the reactions it may. It replaces the message's body:
/// an edit cuts it before `"text"` (the last field but `edited`) and puts the event's
/// text and `"edited":ARGV[13]` there; a delete puts `"deleted":true` there, and does
/// the same to the earlier edit events of the message (the `edits` hash lists them).
/// The old body is overwritten: no copy of the text is left in Redis.
/// [`super::edits`] makes the same rewrite of the copies in the rings. A moderator's
/// event (ARGV[9] `access`) sets field ARGV[14] of the room's access hash to ARGV[15]
/// (deletes it when that is empty) with the event: a kick or a read-only room is in
/// force exactly when its event is in the room's order.
///
/// The room's epoch is set to ARGV[8] when it has none, so the instances racing to store
/// a room's first message agree on one. It is set to ARGV[8] too when the room's
/// history went back behind what this instance knows (ARGV[19] is the epoch it knows,
/// ARGV[20] the highest seq of it it acked or delivered): a replica promoted without
/// the newest appends, or a Redis restored from an older snapshot, would otherwise hand
/// out those seqs again for other messages in the same epoch. A new epoch is marked
/// (KEYS[9]) and its first stream entry carries it (field `e`), so every reader, even
/// one that never saw the lost seqs, learns where the new history starts. The bodies are trimmed with the stream: every
/// body (and `edits` field) below the stream's first entry is deleted (the `low` key
/// remembers where the bodies start, so each is deleted once).
///
/// Every stored entry is also announced on the deployment's news stream (room, seq),
/// which the readers follow instead of every room's stream (see `super::reader`).
///
/// A plain post whose JSON has `mentions` adds its seq to each mentioned user's unread
/// mentions (KEYS[10], keeping the newest MAX_UNREAD, the author left out); a delete
/// takes the deleted message's seq out of them.
///
/// A plain post that replies records itself under the original in the room's replies
/// hash (KEYS[11]); a delete rewrites each recorded reply's quote of the deleted message
/// as `{"seq":N,"deleted":true}` (store/replies.rs's `unquote`, byte for byte), so its
/// first characters leave Redis with it.
///
/// KEYS: seq, stream, epoch, msgs, low, edits, access, news, epoch mark, mentions,
/// replies, and the dedup key when ARGV[5] == '1'.
/// ARGV: JSON prefix, JSON suffix, stream cap, dedup TTL (s), has-id flag, retry flag,
/// entries a retry without an id looks back, a new epoch, change, message changed,
/// acting user, moderator flag, the change's time, access field, its value, and '1'
/// for a post that a read-only room refuses (a non-moderator's), the room's name, the
/// news stream's cap, the epoch this instance knows ('' none) and its known head.
/// Every answer ends with the room's epoch ('' when it has none).
/// Returns {1, seq} when stored, {0, original seq} for a duplicate, {2, seq} when a
/// retry found its first attempt stored as `seq`; for a change, {3, 0} when the message
/// is not a `msg` of the room (or no longer held), {5, 0} when it was deleted, {4, 0}
/// when the user may not make the change, {6, 0} for a post refused by a read-only
/// room (checked here too, so a post racing a `mode` event on another instance is
/// refused as well).
const APPEND_LUA: &str = r#"
local function answer(code, seq)
  return {code, seq, redis.call('GET', KEYS[3]) or ''}
end
local function body(seq)
  local json = redis.call('HGET', KEYS[4], seq)
  if json then return json end
  local entry = redis.call('XRANGE', KEYS[2], seq .. '-0', seq .. '-0')[1]
  return entry and inline(entry)
end
local suffix = ARGV[2]
-- A reaction taken off: the event ends `"on":false}`.
local function off_suffix() return string.sub(ARGV[2], 1, -6) .. 'false}' end
local function holds(seq)
  local b = body(seq)
  return b == ARGV[1] .. seq .. ARGV[2] or (ARGV[9] == 'react' and b == ARGV[1] .. seq .. off_suffix())
end
local function before_text(json)
  local at = string.find(json, ',"text":', 1, true)
  return at and string.sub(json, 1, at - 1)
end
-- A reply's JSON with its quote of message `of` made the deleted one; nil when it holds
-- no quote text of `of`. The quote string ends at its first unescaped `"`.
local function unquote(json, of)
  local mark = ',"reply":{"seq":' .. of .. ','
  local at = string.find(json, mark, 1, true)
  if not at then return nil end
  local q = string.find(json, '"quote":"', at + #mark, true)
  if not q then return nil end
  local i = q + 9
  while true do
    local c = string.find(json, '[\\"]', i)
    if not c then return nil end
    if string.sub(json, c, c) == '"' then i = c; break end
    i = c + 2
  end
  if string.sub(json, i + 1, i + 1) ~= '}' then return nil end
  return string.sub(json, 1, at - 1) .. ',"reply":{"seq":' .. of .. ',"deleted":true}' .. string.sub(json, i + 2)
end
-- store/reactions.rs's `toggle`, byte for byte: the message with uid's reaction emoji
-- toggled, and whether it is on now; nil when the message holds all it can.
local function react(json, emoji, uid)
  local head = before_text(json)
  local tail = string.sub(json, #head + 1)
  local list = {}
  local from = string.find(head, ',"reactions":{', 1, true)
  if from then
    local upto = string.find(head, '}', from, true)
    for e, users in string.gmatch(string.sub(head, from + 14, upto - 1), '"([^"]*)":%[([^%]]*)%]') do
      local u = {}
      for id in string.gmatch(users, '"([^"]*)"') do u[#u + 1] = id end
      list[#list + 1] = {e, u}
    end
    head = string.sub(head, 1, from - 1) .. string.sub(head, upto + 1)
  end
  local on, mine = true, nil
  for _, r in ipairs(list) do
    if r[1] == emoji then
      mine = r
      for i, id in ipairs(r[2]) do
        if id == uid then table.remove(r[2], i); on = false; break end
      end
    end
  end
  if on then
    if mine then mine[2][#mine[2] + 1] = uid
    elseif #list >= MAX_EMOJI then return nil
    else list[#list + 1] = {emoji, {uid}} end
    local total = 0
    for _, r in ipairs(list) do total = total + #r[2] end
    if total > MAX_REACTIONS then return nil end
  end
  local parts = {}
  for _, r in ipairs(list) do
    if #r[2] > 0 then parts[#parts + 1] = '"' .. r[1] .. '":["' .. table.concat(r[2], '","') .. '"]' end
  end
  if #parts > 0 then head = head .. ',"reactions":{' .. table.concat(parts, ',') .. '}' end
  return head .. tail, on
end
if ARGV[5] == '1' then
  local old = redis.call('GET', KEYS[12])
  if old then
    -- A write, so a WAIT after this (--redis-min-replicas) waits for the replicas to
    -- be as far as this master, the original message included.
    redis.call('EXPIRE', KEYS[12], ARGV[4])
    if ARGV[6] == '1' and holds(old) then return answer(2, tonumber(old)) end
    return answer(0, tonumber(old))
  end
elseif ARGV[6] == '1' then
  for _, entry in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[7])) do
    local seq = string.match(entry[1], '^(%d+)')
    if holds(seq) then return answer(2, tonumber(seq)) end
  end
end
if ARGV[16] == '1' and redis.call('HEXISTS', KEYS[7], 'ro') == 1 then return answer(6, 0) end
local change, of, original, reacted, on = ARGV[9], ARGV[10], nil, nil, true
if change == 'edit' or change == 'delete' or change == 'react' then
  original = body(of)
  local parsed, m = pcall(cjson.decode, original or '')
  if not parsed or type(m) ~= 'table' or m.type ~= 'msg' then return answer(3, 0) end
  if m.deleted or not before_text(original) then return answer(5, 0) end
  if change ~= 'react' and m.uid ~= ARGV[11] and (change == 'edit' or ARGV[12] ~= '1') then return answer(4, 0) end
end
if change == 'react' then
  local emoji = string.match(ARGV[2], ',"emoji":"([^"]*)","on":true}$')
  if not emoji then return answer(3, 0) end
  reacted, on = react(original, emoji, ARGV[11])
  if not reacted then return answer(7, 0) end
  if not on then suffix = off_suffix() end
end
local epoch = redis.call('GET', KEYS[3])
if not epoch or (epoch == ARGV[19] and tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[20])) then
  epoch = ARGV[8]
  redis.call('SET', KEYS[3], epoch)
  redis.call('SET', KEYS[9], epoch)
end
local mark = redis.call('GET', KEYS[9])
local seq = redis.call('INCR', KEYS[1])
if seq == 1 then
  -- The counter is new: if the stream outlived it (a deleted or evicted key), go on
  -- after the stream's last entry, since XADD refuses an id that is not above it.
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if last[1] then
    seq = tonumber(string.match(last[1][1], '^(%d+)')) + 1
    redis.call('SET', KEYS[1], seq)
  end
end
local id = string.format('%d', seq)
if mark then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0', 'b', '1', 'e', mark)
  redis.call('DEL', KEYS[9])
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0', 'b', '1')
end
redis.call('HSET', KEYS[4], id, ARGV[1] .. id .. suffix)
local replied = change == '' and string.match(suffix, ',"reply":{"seq":(%d+),')
if replied then
  local earlier = redis.call('HGET', KEYS[11], replied)
  redis.call('HSET', KEYS[11], replied, earlier and (earlier .. ' ' .. id) or id)
end
if change == '' and string.find(suffix, ',"mentions":[', 1, true) then
  local ok, m = pcall(cjson.decode, ARGV[1] .. id .. suffix)
  if ok and type(m) == 'table' and type(m.mentions) == 'table' then
    for _, uid in ipairs(m.mentions) do
      if type(uid) == 'string' and uid ~= m.uid then
        local list = redis.call('HGET', KEYS[10], uid)
        list = list and (list .. ' ' .. id) or id
        local n = select(2, string.gsub(list, ' ', ' ')) + 1
        if n > MAX_UNREAD then list = string.sub(list, string.find(list, ' ', 1, true) + 1) end
        redis.call('HSET', KEYS[10], uid, list)
      end
    end
  end
end
redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[18], '*', 'r', ARGV[17], 's', id)
if change == 'edit' then
  local text = string.sub(ARGV[2], string.find(ARGV[2], ',"text":', 1, true), -2)
  redis.call('HSET', KEYS[4], of, before_text(original) .. text .. ',"edited":' .. ARGV[13] .. '}')
  local earlier = redis.call('HGET', KEYS[6], of)
  redis.call('HSET', KEYS[6], of, earlier and (earlier .. ' ' .. id) or id)
elseif change == 'delete' then
  redis.call('HSET', KEYS[4], of, before_text(original) .. ',"deleted":true}')
  for edit in string.gmatch(redis.call('HGET', KEYS[6], of) or '', '%d+') do
    local kept = before_text(redis.call('HGET', KEYS[4], edit) or '')
    if kept then redis.call('HSET', KEYS[4], edit, kept .. ',"deleted":true}') end
  end
  redis.call('HDEL', KEYS[6], of)
  for r in string.gmatch(redis.call('HGET', KEYS[11], of) or '', '%d+') do
    local reply = redis.call('HGET', KEYS[4], r)
    local unquoted = reply and unquote(reply, of)
    if unquoted then redis.call('HSET', KEYS[4], r, unquoted) end
  end
  redis.call('HDEL', KEYS[11], of)
  local ok, gone = pcall(cjson.decode, original)
  if ok and type(gone.mentions) == 'table' then
    for _, uid in ipairs(gone.mentions) do
      local list = type(uid) == 'string' and redis.call('HGET', KEYS[10], uid)
      if list then
        local kept = {}
        for s in string.gmatch(list, '%d+') do
          if s ~= of then kept[#kept + 1] = s end
        end
        if #kept > 0 then redis.call('HSET', KEYS[10], uid, table.concat(kept, ' '))
        else redis.call('HDEL', KEYS[10], uid) end
      end
    end
  end
elseif change == 'react' then
  redis.call('HSET', KEYS[4], of, reacted)
elseif change == 'access' then
  if ARGV[15] == '' then redis.call('HDEL', KEYS[7], ARGV[14])
  else redis.call('HSET', KEYS[7], ARGV[14], ARGV[15]) end
end
local low = tonumber(redis.call('GET', KEYS[5]))
if not low or seq - low >= tonumber(ARGV[3]) then
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  local keep = tonumber(string.match(first[1], '^(%d+)'))
  for s = (low or keep), keep - 1 do
    redis.call('HDEL', KEYS[4], s)
    redis.call('HDEL', KEYS[6], s)
    redis.call('HDEL', KEYS[11], s)
  end
  redis.call('SET', KEYS[5], keep)
end
if ARGV[5] == '1' then redis.call('SET', KEYS[12], id, 'EX', ARGV[4]) end
if not on then return {8, seq, epoch} end
return {1, seq, epoch}
"#;

/// Starts a new epoch for a room whose history went back, unless one was started
/// already: the reader runs it when it finds the room's seq below what it delivered in
/// the same epoch, or the epoch gone while it had delivered messages. The new epoch is
/// marked for the room's next stream entry (see [`APPEND_LUA`]).
///
/// KEYS: seq, epoch, epoch mark. ARGV: the epoch the reader followed ('' none), a new
/// epoch, the seq it delivered up to.
/// Returns {head, epoch ('' none)} as they are afterwards.
const BUMP_LUA: &str = r"
local epoch = redis.call('GET', KEYS[2])
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local known = tonumber(ARGV[3])
if (not epoch and known > 0) or (epoch and epoch == ARGV[1] and head < known) then
  epoch = ARGV[2]
  redis.call('SET', KEYS[2], epoch)
  redis.call('SET', KEYS[3], epoch)
end
return {head, epoch or ''}
";

/// Reads the room's head and epoch and the entries of one `XRANGE`/`XREVRANGE` with
/// their bodies, in one step: a message appended meanwhile would otherwise look like a
/// trimmed one, or belong to another epoch. A join reads the user's read marker of the
/// room along (KEYS[5], ARGV[5]).
///
/// KEYS: seq, epoch, stream, msgs, and the user's markers when one is asked for.
/// ARGV: `XRANGE` or `XREVRANGE`, start id, end id, COUNT, and the room.
/// Returns {head or nil, epoch or nil, {{seq, json}, ...}, marker or nil} in the
/// command's order; an entry natter did not write (an id other than `S-0`, no body) is
/// left out.
const READ_LUA: &str = r"
local found = {}
for _, entry in ipairs(redis.call(ARGV[1], KEYS[3], ARGV[2], ARGV[3], 'COUNT', ARGV[4])) do
  local seq = string.match(entry[1], '^(%d+)%-0$')
  local json = seq and (redis.call('HGET', KEYS[4], seq) or inline(entry))
  if json then found[#found + 1] = {tonumber(seq), json} end
end
local marker = KEYS[5] and redis.call('HGET', KEYS[5], ARGV[5]) or false
local unread = {}
if KEYS[6] then
  for s in string.gmatch(redis.call('HGET', KEYS[6], ARGV[6]) or '', '%d+') do
    if tonumber(s) > tonumber(marker or '0') then unread[#unread + 1] = s end
  end
end
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), found, marker, table.concat(unread, ' ')}
";

/// Moves a user's read marker of a room forward, never back, and tells the other
/// instances in the same step (so they hear of two moves in the order they were made).
///
/// The user's unread mentions in the room (KEYS[2]) at or below the new marker are
/// read: they are cut, and what is left goes with the event (`"unread":"3 7"` added to
/// its JSON) and the answer.
///
/// KEYS: the user's markers, the room's mentions. ARGV: room, seq, the room's events
/// channel, the event, the user.
/// Returns {1, unread} when the marker moved, {0, ''} when it was there or further
/// already.
const MARK_READ_LUA: &str = r#"
if tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') then return {0, ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local kept = {}
for s in string.gmatch(redis.call('HGET', KEYS[2], ARGV[5]) or '', '%d+') do
  if tonumber(s) > tonumber(ARGV[2]) then kept[#kept + 1] = s end
end
local unread = table.concat(kept, ' ')
if unread == '' then redis.call('HDEL', KEYS[2], ARGV[5]) else redis.call('HSET', KEYS[2], ARGV[5], unread) end
redis.call('PUBLISH', ARGV[3], string.sub(ARGV[4], 1, -2) .. ',"unread":"' .. unread .. '"}')
return {1, unread}
"#;

/// The body an entry written by an earlier natter holds itself (field `m`), or nil.
const INLINE_LUA: &str = r"
local function inline(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then return fields[i + 1] end
  end
  return nil
end
";

/// The bounds of a message's reactions (store/reactions.rs) and of a user's unread
/// mentions (store/mentions.rs), for the append script.
fn reaction_bounds() -> String {
    use crate::store::mentions::MAX_UNREAD;
    use crate::store::reactions::{MAX_EMOJI_PER_MSG, MAX_REACTIONS_PER_MSG};
    format!("local MAX_EMOJI, MAX_REACTIONS, MAX_UNREAD = {MAX_EMOJI_PER_MSG}, {MAX_REACTIONS_PER_MSG}, {MAX_UNREAD}\n")
}

/// The store's scripts, loaded once per connection owner (`EVALSHA`, then `EVAL` the
/// first time a Redis does not know one).
pub(super) struct Scripts {
    pub append: Script,
    pub read: Script,
    pub mark_read: Script,
    pub bump: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            append: Script::new(&[INLINE_LUA, &reaction_bounds(), APPEND_LUA].concat()),
            read: Script::new(&[INLINE_LUA, READ_LUA].concat()),
            mark_read: Script::new(MARK_READ_LUA),
            bump: Script::new(BUMP_LUA),
        }
    }
}
