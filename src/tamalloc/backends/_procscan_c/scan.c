/*
 * The hot loop of the procfs backend in C: status, oom_score and oom_score_adj of
 * every process in a list (or in /proc), read with the GIL released and returned as
 * MemStats.
 *
 * Three files a process are the floor for MemStats (the anon/file/shmem split and
 * swap are only in status, oom_score_adj only in its own file), and each costs three
 * system calls: openat relative to one fd of /proc (a two-component walk, "PID/file"),
 * one read (these files come whole from one show(), so a short read is the end) and
 * close: 9 a process, where stdio-style reading to EOF took 12. The kernel then
 * spends ~90% of the scan's time in those calls (generating status alone is a third),
 * so what is left in user space (parsing, building objects) is small. That work is
 * the floor, so with many processes it is shared among threads, one per CPU this
 * process may use (at most 4, one per 256 processes): it costs the same CPU time and
 * takes less wall time when a CPU is free; results are identical, in pids order.
 * procfs.py holds the reference implementation in pure Python, used when this module
 * was not built, and the tests hold the two to the same results.
 */
#include "scan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kept.h"
#include "parse.h"

#define STATUS_INITIAL 4096

/* "PID/" into pp->path: digits by hand, no snprintf in the loop. */
static void set_pid(struct proc_path *pp, long pid)
{
	char digits[24];
	size_t n = 0;
	unsigned long v = (unsigned long)pid;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (pp->prefix = 0; n; pp->prefix++)
		pp->path[pp->prefix] = digits[--n];
	pp->path[pp->prefix++] = '/';
	pp->path[pp->prefix] = '\0';
}

/* pp->path with "PID/" followed by file (which must fit: callers pass constants). */
static const char *file_path(struct proc_path *pp, const char *file, size_t len)
{
	memcpy(pp->path + pp->prefix, file, len + 1);
	return pp->path;
}

/*
 * A process whose main thread is gone while others live (a zombie leader, after
 * pthread_exit) has no memory lines in its status, but says Threads > 1, and any
 * live thread's status has the process's memory: the first other thread in task/
 * whose status has them gives them. Returns 1 when found, 0 when no thread has any,
 * or -errno when task/ cannot be listed; a thread that exits meanwhile is passed
 * over. Only statuses without memory lines come here. Mirrors procfs.py's
 * _leaderless_memory.
 */
static int read_leaderless(const char *status, struct record *rec, struct buffer *buf,
			   struct proc_path *pp)
{
	struct dirent *ent;
	int found = 0;
	DIR *dir;
	int fd;

	if (ps_parse_threads(status) < 2)
		return 0;
	fd = openat(pp->dirfd, file_path(pp, "task", 4), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		found = -errno;
		close(fd);
		return found;
	}
	for (;;) {
		char task_path[96];
		size_t len;
		char *end;
		long tid;

		errno = 0;
		ent = readdir(dir);
		if (!ent) {
			if (errno)
				found = -errno;
			break;
		}
		if (ent->d_name[0] < '0' || ent->d_name[0] > '9')
			continue;
		tid = strtol(ent->d_name, &end, 10);
		if (*end || tid == rec->pid)
			continue;
		snprintf(task_path, sizeof(task_path), "%.*stask/%ld/status",
			 (int)pp->prefix, pp->path, tid);
		if (ps_read_file(pp, task_path, H_NONE, buf, &len))
			continue;
		if (ps_parse_memory(buf->data, rec)) {
			found = 1;
			break;
		}
	}
	closedir(dir);
	return found;
}

/* 0, or the errno that stopped this process being read. */
static int read_process(struct record *rec, struct buffer *buf, struct proc_path *pp)
{
	size_t len;
	int err;

	set_pid(pp, rec->pid);
	err = ps_read_file(pp, file_path(pp, "status", 6), H_STATUS, buf, &len);
	if (err)
		return err;
	ps_parse_name(buf->data, rec);
	if (!ps_parse_memory(buf->data, rec)) {
		/* A kernel thread or zombie, unless a zombie leader with live threads. */
		int found = read_leaderless(buf->data, rec, buf, pp);

		if (found < 0)
			return -found;
		if (!found) {
			rec->state = READ_NO_MM;
			return 0;
		}
	}
	err = ps_read_long(pp, file_path(pp, "oom_score", 9), H_OOM_SCORE, buf, &rec->oom_score);
	if (err)
		return err;
	err = ps_read_long(pp, file_path(pp, "oom_score_adj", 13), H_OOM_SCORE_ADJ, buf,
			&rec->oom_score_adj);
	if (err)
		return err;
	rec->state = READ_OK;
	return 0;
}

int ps_is_skipped(int err, const int *skip, int n_skip)
{
	int i;

	for (i = 0; i < n_skip; i++)
		if (skip[i] == err)
			return 1;
	return 0;
}

struct reader {
	struct buffer buf;
	struct proc_path pp;
	int index;			/* in job->dirfds */
};

/* Under fd_lock. */
static int reader_open(struct reader *r, struct scan_job *job)
{
	r->pp.slot = NULL;
	r->pp.hold_base = job->hold_base;
	r->pp.room = &job->room;
	r->buf.size = STATUS_INITIAL;
	r->buf.data = malloc(r->buf.size);
	if (!r->buf.data)
		return ENOMEM;
	r->pp.dirfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->pp.dirfd < 0) {
		free(r->buf.data);
		return errno;
	}
	r->index = job->n_readers++;
	job->dirfds[r->index] = r->pp.dirfd;
	return 0;
}

/* Under fd_lock. */
static void reader_close(struct reader *r, struct scan_job *job)
{
	job->dirfds[r->index] = -1;
	close(r->pp.dirfd);
	free(r->buf.data);
}

static void job_fail(struct scan_job *job, Py_ssize_t index, int err)
{
	pthread_mutex_lock(&job->lock);
	if (!job->failed_errno || index < job->failed_index) {
		__atomic_store_n(&job->failed_index, index, __ATOMIC_RELAXED);
		job->failed_errno = err;
	}
	pthread_mutex_unlock(&job->lock);
}

/* Nothing at or past i is needed: an earlier record failed, or the job closed. */
static int job_stopped_before(struct scan_job *job, Py_ssize_t i)
{
	return i > __atomic_load_n(&job->failed_index, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&job->closed, __ATOMIC_RELAXED);
}

/* Claims record i if no thread has: 1 when this thread is to read it. */
static int claim(struct scan_job *job, Py_ssize_t i)
{
	unsigned char free_ = CLAIM_FREE;

	return __atomic_compare_exchange_n(&job->claim[i], &free_, CLAIM_TAKEN, 0,
					   __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

/*
 * Reads record i into a copy and publishes it unless someone did or the job closed.
 * mine: this thread claimed it, and so may use its kept files (a record read twice
 * is read the second time without them).
 */
static void read_one(struct scan_job *job, struct reader *r, Py_ssize_t i, int mine)
{
	struct record rec;
	int err;

	rec.pid = job->pids[i];
	ps_fds_lock();
	r->pp.slot = mine && job->held ? &job->held[i] : NULL;
	err = read_process(&rec, &r->buf, &r->pp);
	r->pp.slot = NULL;
	ps_fds_unlock();
	if (err)
		rec.state = READ_SKIPPED;
	pthread_mutex_lock(&job->lock);
	if (!job->closed &&
	    __atomic_load_n(&job->claim[i], __ATOMIC_RELAXED) != CLAIM_PUBLISHED) {
		memcpy(&job->recs[i], &rec, sizeof(rec));
		__atomic_store_n(&job->claim[i], CLAIM_PUBLISHED, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&job->lock);
	if (err && !ps_is_skipped(err, job->skip, job->n_skip))
		job_fail(job, i, err);
}

/* The next block [*start, *end), or 0 when none is left. */
static int take_block(struct scan_job *job, Py_ssize_t *start, Py_ssize_t *end)
{
	int taken = 0;

	pthread_mutex_lock(&job->lock);
	if (job->next < job->n && !job->closed && !job->failed_errno) {
		*start = job->next;
		job->next = job->n - job->next > BLOCK ? job->next + BLOCK : job->n;
		*end = job->next;
		taken = 1;
	}
	pthread_mutex_unlock(&job->lock);
	return taken;
}

static void scan_blocks(struct scan_job *job, struct reader *r)
{
	Py_ssize_t i, end;

	while (take_block(job, &i, &end)) {
		for (; i < end && !job_stopped_before(job, i); i++)
			if (claim(job, i))
				read_one(job, r, i, 1);
	}
}

void ps_free_job(struct scan_job *job)
{
	free(job->claim);
	free(job->pids);
	free(job->held);
	free(job);
}

static void leave_job(struct scan_job *job)
{
	int last;

	pthread_mutex_lock(&job->lock);
	last = --job->refs == 0;
	pthread_mutex_unlock(&job->lock);
	if (last) {
		ps_fds_lock();
		if (job->held)
			ps_give_back_kept(job);
		ps_unregister_job(job);
		ps_fds_unlock();
		pthread_mutex_destroy(&job->lock);
		ps_free_job(job);
	}
}

static void *worker(void *arg)
{
	struct scan_job *job = arg;
	struct reader r;
	int err;

	/* A worker that cannot set up reads nothing: the caller reads what is left. */
	ps_fds_lock();
	err = reader_open(&r, job);
	ps_fds_unlock();
	if (!err) {
		scan_blocks(job, &r);
		ps_fds_lock();
		reader_close(&r, job);
		ps_fds_unlock();
	}
	leave_job(job);
	return NULL;
}

/* How many threads for n records: one per MIN_PER_THREAD, at most one per CPU that
 * this process may run on, and at most MAX_THREADS. */
int ps_scan_threads(Py_ssize_t n, int wanted)
{
	cpu_set_t cpus;
	int limit = MAX_THREADS;

	if (wanted > 0)
		return wanted < MAX_THREADS ? wanted : MAX_THREADS;
	if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) < limit)
		limit = CPU_COUNT(&cpus);
	if (n / MIN_PER_THREAD < limit)
		limit = (int)(n / MIN_PER_THREAD);
	return limit > 1 ? limit : 1;
}

/*
 * Reads recs[0..n) on n_threads threads (fewer if a worker cannot be started), with
 * the files the last full scan kept and keeping them for the next if hold (recs by
 * increasing pid then), within max_bytes of kernel memory. Returns 0, or the errno
 * that stopped the scan with *failed_index its record (-1 for a failure not tied to
 * a record).
 */
int ps_run_scan(struct record *recs, Py_ssize_t n, const int *skip, int n_skip,
		int n_threads, int hold, long max_bytes, Py_ssize_t *failed_index)
{
	struct scan_job *job = calloc(1, sizeof(*job));
	struct reader r;
	Py_ssize_t i;
	int err;
	int t;

	*failed_index = -1;
	if (job) {
		job->pids = malloc((n ? n : 1) * sizeof(*job->pids));
		job->claim = calloc(n ? n : 1, 1);
	}
	if (!job || !job->pids || !job->claim) {
		if (job)
			ps_free_job(job);
		return ENOMEM;
	}
	for (i = 0; i < n; i++)
		job->pids[i] = recs[i].pid;
	job->n = n;
	for (t = 0; t < MAX_THREADS; t++)
		job->dirfds[t] = -1;
	memcpy(job->skip, skip, n_skip * sizeof(*skip));
	job->n_skip = n_skip;
	job->failed_index = n;
	job->recs = recs;
	job->refs = n_threads;		/* a worker that cannot start leaves at once */
	pthread_mutex_init(&job->lock, NULL);
	ps_fds_lock();
	ps_register_job(job);
	if (hold)
		ps_take_kept(job, recs, max_bytes);
	err = reader_open(&r, job);
	if (err) {
		if (job->held)
			ps_give_back_kept(job);
		ps_unregister_job(job);
		ps_fds_unlock();
		pthread_mutex_destroy(&job->lock);
		ps_free_job(job);
		return err;
	}
	ps_fds_unlock();
	if (n_threads > 1) {
		pthread_attr_t attr;
		sigset_t all, old;

		/* Workers start with every signal blocked: signals stay the caller's. */
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		for (t = 1; t < n_threads; t++) {
			pthread_t thread;

			if (pthread_create(&thread, &attr, worker, job))
				leave_job(job);
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		pthread_attr_destroy(&attr);
	}
	scan_blocks(job, &r);
	/*
	 * No block is left: what workers have not published yet (in blocks they hold,
	 * claimed or not), the caller reads itself, claiming what it can so that they
	 * skip it.
	 */
	for (i = 0; i < n && !job_stopped_before(job, i); i++)
		if (__atomic_load_n(&job->claim[i], __ATOMIC_RELAXED) != CLAIM_PUBLISHED)
			read_one(job, &r, i, claim(job, i));
	ps_fds_lock();
	reader_close(&r, job);
	ps_fds_unlock();
	pthread_mutex_lock(&job->lock);
	__atomic_store_n(&job->closed, 1, __ATOMIC_RELAXED);
	err = job->failed_errno;
	*failed_index = job->failed_index;
	pthread_mutex_unlock(&job->lock);
	leave_job(job);
	return err;
}

static int compare_pids(const void *a, const void *b)
{
	long x = ((const struct record *)a)->pid, y = ((const struct record *)b)->pid;

	return (x > y) - (x < y);
}

/* A record per process id in /proc, by increasing pid (as procfs.list_pids). */
int ps_list_proc(struct record **recs, Py_ssize_t *count)
{
	struct record *all = NULL;
	size_t n = 0, cap = 0;
	struct dirent *ent;
	int err = 0;
	DIR *dir;

	dir = opendir("/proc");
	if (!dir)
		return errno;
	for (;;) {
		const char *p;
		long pid = 0;

		errno = 0;
		ent = readdir(dir);
		if (!ent) {
			err = errno;
			break;
		}
		for (p = ent->d_name; *p >= '0' && *p <= '9'; p++)
			pid = pid * 10 + (*p - '0');
		if (*p || p == ent->d_name)
			continue;
		if (n == cap) {
			struct record *bigger;

			cap = cap ? cap * 2 : 1024;
			bigger = realloc(all, cap * sizeof(*all));
			if (!bigger) {
				err = ENOMEM;
				break;
			}
			all = bigger;
		}
		memset(&all[n], 0, sizeof(all[n]));
		all[n++].pid = pid;
	}
	closedir(dir);
	if (err) {
		free(all);
		return err;
	}
	qsort(all, n, sizeof(*all), compare_pids);
	*recs = all;
	*count = (Py_ssize_t)n;
	return 0;
}
