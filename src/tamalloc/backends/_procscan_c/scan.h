/* scan.c: one scan of a list of processes, or of every process in /proc. */
#ifndef PROCSCAN_SCAN_H
#define PROCSCAN_SCAN_H

#include "procscan.h"

#include <pthread.h>

#include "kept.h"

/*
 * The scan of the records, shared by up to MAX_THREADS threads: the caller's and
 * detached workers, each taking BLOCK records at a time, claiming each record before
 * reading it, with its own fd of /proc and buffer. The caller never waits for a
 * worker: on a busy machine a worker may wait milliseconds for a CPU before it
 * starts or in the middle of a read, so once no block is left the caller reads
 * itself every record not yet published (claimed or not: reading /proc twice is
 * harmless), then closes the job; a worker publishes a record into the caller's
 * array only under the lock and while the job is open, and reads only what the job
 * owns (its copy of the pids), which whichever thread leaves last frees. A process
 * whose read fails with an errno outside skip stops the scan: the failure with the
 * lowest index is reported, as a sequential scan would, and nothing past it is read.
 */
#define BLOCK 16
#define MAX_THREADS 4
#define MIN_PER_THREAD 256

enum { CLAIM_FREE, CLAIM_TAKEN, CLAIM_PUBLISHED };

struct scan_job {
	Py_ssize_t n;
	long *pids;			/* the job's copy */
	unsigned char *claim;		/* CLAIM_*, per record; atomic */
	int skip[MAX_SKIP_ERRNOS];
	int n_skip;
	Py_ssize_t failed_index;	/* lowest failed record (n: none; -1: no record);
					   written under the lock, read atomically */
	pthread_mutex_t lock;		/* guards what follows, and failed_* writes */
	struct record *recs;		/* the caller's, written only while !closed */
	int closed;
	int failed_errno;
	Py_ssize_t next;		/* first record of the next block */
	int refs;			/* threads that have not left the job */
	struct held *held;		/* per record, or NULL: this scan keeps no files */
	int hold_base;
	struct hold_room room;
	/* Under fd_lock: the readers' fds of /proc (-1: none), and the list of jobs. */
	int dirfds[MAX_THREADS];
	int n_readers;
	struct scan_job *next_job;
};

#pragma GCC visibility push(hidden)
int ps_is_skipped(int err, const int *skip, int n_skip);
void ps_free_job(struct scan_job *job);
int ps_scan_threads(Py_ssize_t n, int wanted);
int ps_run_scan(struct record *recs, Py_ssize_t n, const int *skip, int n_skip,
		int n_threads, int hold, long max_bytes, Py_ssize_t *failed_index);
int ps_list_proc(struct record **recs, Py_ssize_t *count);
#pragma GCC visibility pop

#endif
