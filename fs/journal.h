/* The journal: state_dir/journal/, the durable record of what the daemon
 * accepted, written with group commit.
 *
 *   journal/SEQ.log   segments (SEQ: 16 hex digits), replayed in order
 *
 * A record is one line: the CRC-32 of the JSON text in 8 hex digits, a
 * space, one JSON object, a newline. A segment is preallocated, so a
 * full disk cannot stop a record that fits in it; its unused tail is
 * zeros. Replay stops reading a segment at its first record that is
 * torn or does not check (the tail a crash cut off: never acknowledged).
 *
 * Group commit: journal_append writes a record to the page cache and
 * returns its position; journal_wait returns once everything up to that
 * position is on disk. Whoever waits first runs one fdatasync for
 * everybody appended so far; the others wait for it or for the next one,
 * so many records arriving together cost one flush.
 *
 * What the records mean is the jobs' business (job_journal.c); this file
 * knows lines, segments and flushes. */
#ifndef PROMPTFS_JOURNAL_H
#define PROMPTFS_JOURNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes preallocated per segment; a larger record gets a segment of its
 * own size. */
#define JOURNAL_SEGMENT_BYTES (256 * 1024)

/* Opens state_dir/journal. *FRESH is set when there is none (a new
 * state_dir, or one from before the journal): one is then made, empty,
 * as state_dir/journal.new, for journal_adopt to give its name once it
 * records what the tree holds. 0 or -errno with a sentence in ERR. */
int journal_open(int state_fd, int *fresh, char *err, size_t err_size);
int journal_adopt(void);

/* Calls FN with every record of every segment, oldest first; FN may keep
 * a reference. Segments that fail their check past a torn tail are
 * logged. 0 or -errno. */
int journal_replay(void (*fn)(void *ctx, json_t *record), void *ctx);

/* Starts a new segment for appending; every older segment stays until
 * journal_drop_old. Returns the new segment's number or -errno. */
int64_t journal_rotate(void);

/* Appends RECORD; *LSN gets the position journal_wait needs. 0 or -errno
 * (-ENOSPC when the disk is full and the segment has no room). */
int journal_append(const json_t *record, uint64_t *lsn);

/* Returns once every record up to LSN is durable. 0 or -errno (-EIO
 * once a flush failed: what it held may be lost, and the journal takes
 * no more records). */
int journal_wait(uint64_t lsn);

/* Removes every segment older than SEQ, then makes that durable. */
int journal_drop_old(int64_t seq);

/* Bytes appended since the journal was opened: a caller measures how
 * much a checkpoint would drop by the difference of two readings. */
uint64_t journal_position(void);

void journal_close(void);

#endif
