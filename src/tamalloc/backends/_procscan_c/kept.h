/* kept.c: the files a full scan keeps open for the next one, and fork(). */
#ifndef PROCSCAN_KEPT_H
#define PROCSCAN_KEPT_H

#include "procscan.h"

#include <sys/types.h>

struct scan_job;

/* The files a full scan may keep open for the next one, per process. */
enum { H_STATUS, H_OOM_SCORE, H_OOM_SCORE_ADJ, N_HELD, H_NONE = -1 };

struct held_file {
	int fd;			/* -1: none */
	long cost;		/* bytes of kernel memory counted against the budget */
	dev_t dev;		/* of the file kept, to know it again */
	ino_t ino;
};

struct held {
	struct held_file f[N_HELD];
};

/*
 * The kernel memory a kept file pins, unreclaimable and charged to the scanner's
 * memory cgroup: a struct file with its share of the inode and dentry (the 512
 * below), and for a seq_file (status, oom_score) the buffer seq_read allocated, a
 * page doubled until the text fitted, which stays until the file is closed. That
 * is 9.5 KiB a process with its three files; 9.0-9.4 KiB was measured (the README
 * says how). A caller sets the budget in bytes; by default 8 MiB, ~860 processes:
 * a 16th of a 128 MiB cgroup, where an exporter's Python takes 25 MiB.
 */
#define KEPT_FILE_COST 512
#define KEPT_BYTES_DEFAULT (8L << 20)

/* How much more may be kept: fds, and bytes of kernel memory; both atomic. Either
 * may dip below zero for a moment while threads race: a reservation that sees that
 * fails, so together they never exceed the bounds. */
struct hold_room {
	int files;
	long bytes;
};

/* The directory fd every file is opened relative to, and a path under it. */
struct proc_path {
	int dirfd;			/* of /proc, opened once per scan */
	char path[96];		/* "PID/" then the file */
	size_t prefix;		/* length of "PID/" */
	struct held *slot;		/* the files kept for this process, or NULL */
	int hold_base;			/* lowest fd number a kept file takes */
	struct hold_room *room;
};

/* What the last full scan kept: taken whole by the next (busy), or left alone. */
struct kept {
	int busy;			/* atomic */
	Py_ssize_t n;
	long *pids;			/* increasing */
	struct held *slots;
};

#pragma GCC visibility push(hidden)
extern struct kept ps_kept;
extern struct scan_job *ps_orphans;	/* in a forked child: jobs of threads left behind */

int ps_kept_init(void);
void ps_fds_lock(void);
void ps_fds_unlock(void);
void ps_register_job(struct scan_job *job);
void ps_unregister_job(struct scan_job *job);
int ps_read_file(struct proc_path *pp, const char *path, int which, struct buffer *buf,
		 size_t *len);
int ps_read_long(struct proc_path *pp, const char *path, int which, struct buffer *buf,
		 long *value);
void ps_take_kept(struct scan_job *job, const struct record *recs, long max_bytes);
void ps_give_back_kept(struct scan_job *job);
void ps_close_kept(void);
#pragma GCC visibility pop

#endif
