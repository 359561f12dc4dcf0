/* Where a job is in the journal's records: its directory's path in the
 * tree and its NAME, and where a recorded directory move takes it. The
 * journal's replay (job_journal.c) and the audit log's (audit_replay.c)
 * both follow jobs by it. Pure: no I/O, no lock. */
#ifndef PROMPTFS_REPLAY_PLACE_H
#define PROMPTFS_REPLAY_PLACE_H

#include <jansson.h>

/* "PATH\nBASE": the key of a place (malloc'd; NULL when out of memory). */
char *replay_place_key(const char *path, const char *base);

/* NAME of a replayed entry {"job": its job record, "path": ...}. */
const char *replay_entry_base(const json_t *entry);

/* PATH after a move of FROM to TO (with EXCHANGE, of either onto the
 * other): malloc'd, or NULL when the move does not concern PATH. */
char *replay_path_after_move(const char *path, const char *from, const char *to, int exchange);

#endif
