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
 *
 * A full scan may also keep its files open for the next one (hold=1): openat and
 * close are about half of what a process costs, and a file kept open is read again
 * with pread at offset 0, where seq_file and oom_score_adj generate it anew. A kept
 * file stays bound to its process (the struct pid behind /proc/PID), never to a later
 * one that reuses the number: reading it then fails (ESRCH) and the file is opened
 * afresh, as it is whenever a kept one fails. Kept fds sit at or above half the soft
 * RLIMIT_NOFILE (1024 to 65536), take at most a quarter of it, and are close-on-exec,
 * so that the caller's own fds keep the low numbers select() takes; each is used only
 * after fstat shows it is still the file kept (a caller may close fds it does not
 * know of and reuse the numbers). procfs.py asks for this only where /proc hides
 * nothing (no hidepid): a kept file then shows nothing a new open would refuse.
 * The kernel memory kept files pin is bounded by a budget in bytes (max_bytes), and
 * a forked child closes every fd this module holds, wherever it is (fd_lock).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* status prints at most 64 bytes of a name (a kthread's), each escaped into two. */
#define NAME_MAX_BYTES 256
#define MAX_SKIP_ERRNOS 16
#define STATUS_INITIAL 4096
#define N_FIELDS 11

enum { F_SIZE, F_RSS, F_ANON, F_FILE, F_SHMEM, F_SWAP, N_MEMORY };

static const struct {
	const char *key;
	size_t len;
} memory_keys[N_MEMORY] = {
	{ "VmSize:", 7 }, { "VmRSS:", 6 }, { "RssAnon:", 8 },
	{ "RssFile:", 8 }, { "RssShmem:", 9 }, { "VmSwap:", 7 },
};

struct record {
	long pid;
	int state;		/* READ_OK, or skipped */
	char name[NAME_MAX_BYTES];
	size_t name_len;
	unsigned long long memory[N_MEMORY];
	long oom_score;
	long oom_score_adj;
};

enum { READ_OK, READ_NO_MM, READ_SKIPPED };

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

/* What the last full scan kept: taken whole by the next (busy), or left alone. */
static struct {
	int busy;			/* atomic */
	Py_ssize_t n;
	long *pids;			/* increasing */
	struct held *slots;
} kept;

#define HOLD_BASE_MIN 1024
#define HOLD_BASE_MAX 65536
#define HOLD_MAX_FDS (3 * 16384)

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

struct buffer {
	char *data;
	size_t size;
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
 * Whole file into buf (NUL-terminated) from offset 0; returns 0 or an errno. These
 * files are produced whole by one show() (seq_file single_open, or
 * simple_read_from_buffer for oom_score_adj), so a read that does not fill the buffer
 * got all of it and no second read for EOF is needed; only a status longer than the
 * buffer (a huge Groups line) reads on, into a bigger one. Python's _read and _scan
 * follow the same rule.
 */
static int read_whole(int fd, struct buffer *buf, size_t *len)
{
	size_t used = 0;
	int err = 0;

	for (;;) {
		size_t room = buf->size - used - 1;
		ssize_t n = pread(fd, buf->data + used, room, (off_t)used);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			break;
		}
		used += n;
		if ((size_t)n < room)
			break;
		if (buf->size - used < 2) {
			char *bigger = realloc(buf->data, buf->size * 2);

			if (!bigger) {
				err = ENOMEM;
				break;
			}
			buf->data = bigger;
			buf->size *= 2;
		}
	}
	buf->data[used] = '\0';
	*len = used;
	return err;
}

/* Whether hf's fd is still the file kept: a caller may have closed it and reused
 * the number for a file of its own, which must be neither read nor closed. */
static int held_is_ours(const struct held_file *hf)
{
	struct stat st;

	return hf->fd >= 0 && fstat(hf->fd, &st) == 0 && st.st_dev == hf->dev &&
	       st.st_ino == hf->ino;
}

static void held_init(struct held *h)
{
	int k;

	for (k = 0; k < N_HELD; k++)
		h->f[k].fd = -1;
}

static void held_close(struct held *h)
{
	int k;

	for (k = 0; k < N_HELD; k++) {
		if (held_is_ours(&h->f[k]))
			close(h->f[k].fd);
		h->f[k].fd = -1;
	}
}

static long page_size = 4096;

/* What keeping file which (H_*) costs once len bytes of it were read: see
 * KEPT_FILE_COST. oom_score_adj is not a seq_file and has no buffer. */
static long file_cost(int which, size_t len)
{
	long buffer = page_size;

	if (which == H_OOM_SCORE_ADJ)
		return KEPT_FILE_COST;
	while ((size_t)buffer <= len && buffer < LONG_MAX / 4)
		buffer *= 2;
	return KEPT_FILE_COST + buffer;
}

static int reserve_bytes(struct hold_room *room, long bytes)
{
	if (__atomic_sub_fetch(&room->bytes, bytes, __ATOMIC_RELAXED) >= 0)
		return 1;
	__atomic_add_fetch(&room->bytes, bytes, __ATOMIC_RELAXED);
	return 0;
}

/* Room for one more file of cost bytes: 1 when reserved. */
static int reserve(struct hold_room *room, long cost)
{
	if (__atomic_sub_fetch(&room->files, 1, __ATOMIC_RELAXED) >= 0 &&
	    reserve_bytes(room, cost))
		return 1;
	__atomic_add_fetch(&room->files, 1, __ATOMIC_RELAXED);
	return 0;
}

static void unreserve(struct hold_room *room, long cost)
{
	__atomic_add_fetch(&room->files, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&room->bytes, cost, __ATOMIC_RELAXED);
}

/* Keeps fd (just read) as hf, at pp->hold_base or above: 1 when kept, and fd is then
 * closed; 0 when there is no room or no such number, and fd stays the caller's. */
static int hold(struct proc_path *pp, struct held_file *hf, int fd, long cost)
{
	struct stat st;
	int high;

	if (!reserve(pp->room, cost))
		return 0;
	high = fcntl(fd, F_DUPFD_CLOEXEC, pp->hold_base);
	if (high < 0)
		goto out_unreserve;
	if (fstat(high, &st))
		goto out_close_high;
	close(fd);
	hf->fd = high;
	hf->cost = cost;
	hf->dev = st.st_dev;
	hf->ino = st.st_ino;
	return 1;

out_close_high:
	close(high);
out_unreserve:
	unreserve(pp->room, cost);
	return 0;
}

/* Closes a kept file (if still ours) after a read and gives its room back. */
static void drop(struct proc_path *pp, struct held_file *hf)
{
	if (held_is_ours(hf))
		close(hf->fd);
	hf->fd = -1;
	unreserve(pp->room, hf->cost);
}

/*
 * path (under pp->dirfd) into buf; returns 0 or an errno. which names the file among
 * those a scan keeps (H_NONE: never kept): a kept one is read again, and opened
 * afresh if that fails; one opened afresh is kept if pp has a slot and room.
 */
static int read_file(struct proc_path *pp, const char *path, int which, struct buffer *buf,
		     size_t *len)
{
	struct held_file *hf = which != H_NONE && pp->slot ? &pp->slot->f[which] : NULL;
	int err;
	int fd;

	if (hf && hf->fd >= 0) {
		if (held_is_ours(hf) && read_whole(hf->fd, buf, len) == 0) {
			long cost = file_cost(which, *len);

			/* A text grown past its buffer got a bigger one, which must fit too. */
			if (cost > hf->cost) {
				if (!reserve_bytes(pp->room, cost - hf->cost)) {
					drop(pp, hf);
					return 0;
				}
				hf->cost = cost;
			}
			return 0;
		}
		drop(pp, hf);
	}
	fd = openat(pp->dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	err = read_whole(fd, buf, len);
	if (err || !hf || !hold(pp, hf, fd, file_cost(which, *len)))
		close(fd);
	return err;
}

static int parse_long(const struct buffer *buf, long *value)
{
	char *end;

	errno = 0;
	*value = strtol(buf->data, &end, 10);
	return errno || end == buf->data ? EINVAL : 0;
}

static int read_long(struct proc_path *pp, const char *path, int which, struct buffer *buf,
		     long *value)
{
	struct held_file *hf = which != H_NONE && pp->slot ? &pp->slot->f[which] : NULL;
	size_t len;
	int err;

	err = read_file(pp, path, which, buf, &len);
	if (err || !parse_long(buf, value))
		return err;
	/*
	 * No number: a kept fd that another thread replaced between its fstat and its
	 * read (dup2 over it) gave someone else's file.  The kernel's own file always
	 * holds a number, so it is read once more, opened afresh and not kept.
	 */
	if (!hf || hf->fd < 0)
		return EINVAL;
	drop(pp, hf);
	err = read_file(pp, path, H_NONE, buf, &len);
	return err ? err : parse_long(buf, value);
}

/* The Name line, with the kernel's escapes of "\n" and "\\" undone. */
static void parse_name(const char *status, struct record *rec)
{
	const char *p = status;
	size_t n = 0;

	if (strncmp(p, "Name:\t", 6) == 0)
		p += 6;
	while (*p && *p != '\n' && n < sizeof(rec->name)) {
		if (p[0] == '\\' && (p[1] == 'n' || p[1] == '\\')) {
			rec->name[n++] = p[1] == 'n' ? '\n' : '\\';
			p += 2;
		} else {
			rec->name[n++] = *p++;
		}
	}
	rec->name_len = n;
}

static const char *next_line(const char *line)
{
	line = strchr(line, '\n');
	return line ? line + 1 : NULL;
}

/* Returns 1 when status has an address space (a VmSize line), else 0. */
static int parse_memory(const char *status, struct record *rec)
{
	const unsigned int all = (1u << N_MEMORY) - 1;
	unsigned int seen = 0;
	const char *line;

	memset(rec->memory, 0, sizeof(rec->memory));
	/* The rest of status (signals, capabilities, cpusets) is passed over at once. */
	for (line = status; line && seen != all; line = next_line(line)) {
		int i;

		if (line[0] != 'V' && line[0] != 'R')
			continue;
		for (i = 0; i < N_MEMORY; i++) {
			if (strncmp(line, memory_keys[i].key, memory_keys[i].len) == 0) {
				rec->memory[i] = strtoull(line + memory_keys[i].len, NULL, 10);
				seen |= 1u << i;
				break;
			}
		}
	}
	return (seen & (1u << F_SIZE)) != 0;
}

/* "Threads:" of a status; 0 when absent. */
static long parse_threads(const char *status)
{
	const char *p = strstr(status, "\nThreads:");

	return p ? strtol(p + 9, NULL, 10) : 0;
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

	if (parse_threads(status) < 2)
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
		if (read_file(pp, task_path, H_NONE, buf, &len))
			continue;
		if (parse_memory(buf->data, rec)) {
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
	err = read_file(pp, file_path(pp, "status", 6), H_STATUS, buf, &len);
	if (err)
		return err;
	parse_name(buf->data, rec);
	if (!parse_memory(buf->data, rec)) {
		/* A kernel thread or zombie, unless a zombie leader with live threads. */
		int found = read_leaderless(buf->data, rec, buf, pp);

		if (found < 0)
			return -found;
		if (!found) {
			rec->state = READ_NO_MM;
			return 0;
		}
	}
	err = read_long(pp, file_path(pp, "oom_score", 9), H_OOM_SCORE, buf, &rec->oom_score);
	if (err)
		return err;
	err = read_long(pp, file_path(pp, "oom_score_adj", 13), H_OOM_SCORE_ADJ, buf,
			&rec->oom_score_adj);
	if (err)
		return err;
	rec->state = READ_OK;
	return 0;
}

static PyObject *build(PyTypeObject *cls, const struct record *rec)
{
	unsigned long long reserved = rec->memory[F_SIZE];
	unsigned long long committed = rec->memory[F_RSS];
	PyObject *obj;
	PyObject *items[N_FIELDS];
	int i;

	items[0] = PyLong_FromLong(rec->pid);
	items[1] = PyUnicode_DecodeUTF8(rec->name, rec->name_len, "replace");
	items[2] = PyLong_FromUnsignedLongLong(reserved);
	items[3] = PyLong_FromUnsignedLongLong(committed);
	/* As Python's committed / reserved * 100: both convert to double exactly. */
	items[4] = PyFloat_FromDouble(reserved ? (double)committed / (double)reserved * 100.0 : 0.0);
	items[5] = PyLong_FromUnsignedLongLong(rec->memory[F_ANON]);
	items[6] = PyLong_FromUnsignedLongLong(rec->memory[F_FILE]);
	items[7] = PyLong_FromUnsignedLongLong(rec->memory[F_SHMEM]);
	items[8] = PyLong_FromUnsignedLongLong(rec->memory[F_SWAP]);
	items[9] = PyLong_FromLong(rec->oom_score);
	items[10] = PyLong_FromLong(rec->oom_score_adj);
	/* A NamedTuple is a tuple subclass: allocated as tuple_subtype_new does. */
	obj = cls->tp_alloc(cls, N_FIELDS);
	for (i = 0; i < N_FIELDS; i++) {
		if (!items[i] || !obj) {
			Py_XDECREF(obj);
			for (i = 0; i < N_FIELDS; i++)
				Py_XDECREF(items[i]);
			return NULL;
		}
	}
	for (i = 0; i < N_FIELDS; i++)
		PyTuple_SET_ITEM(obj, i, items[i]);
	return obj;
}

static int is_skipped(int err, const int *skip, int n_skip)
{
	int i;

	for (i = 0; i < n_skip; i++)
		if (skip[i] == err)
			return 1;
	return 0;
}

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

/*
 * Every fd this module holds is in kept, in a live job's held slots or dirfds, or in
 * passage between them inside a section that holds fd_lock for reading (a process
 * read, a reader opened or closed, kept taken or given back, the listing of /proc).
 * fork() takes it for writing first (pthread_atfork), so the child, where only the
 * forking thread lives, finds every fd in one of those places and closes them all
 * without the threads that had them. Writers are preferred: the scan's threads take
 * it once a process, and a fork must not wait for a gap between them. Memory comes
 * from libc's malloc, never PyMem_Raw*: with tracemalloc on, those take the GIL,
 * which the forking thread holds while it waits for fd_lock.
 */
static pthread_rwlock_t fd_lock;
static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;	/* taken under fd_lock */
static struct scan_job *jobs;		/* live jobs */
static struct scan_job *orphans;	/* in a forked child: jobs of threads left behind */

static void fds_lock(void)
{
	pthread_rwlock_rdlock(&fd_lock);
}

static void fds_unlock(void)
{
	pthread_rwlock_unlock(&fd_lock);
}

static void register_job(struct scan_job *job)
{
	pthread_mutex_lock(&jobs_lock);
	job->next_job = jobs;
	jobs = job;
	pthread_mutex_unlock(&jobs_lock);
}

static void unregister_job(struct scan_job *job)
{
	struct scan_job **p;

	pthread_mutex_lock(&jobs_lock);
	for (p = &jobs; *p; p = &(*p)->next_job) {
		if (*p == job) {
			*p = job->next_job;
			break;
		}
	}
	pthread_mutex_unlock(&jobs_lock);
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
	fds_lock();
	r->pp.slot = mine && job->held ? &job->held[i] : NULL;
	err = read_process(&rec, &r->buf, &r->pp);
	r->pp.slot = NULL;
	fds_unlock();
	if (err)
		rec.state = READ_SKIPPED;
	pthread_mutex_lock(&job->lock);
	if (!job->closed &&
	    __atomic_load_n(&job->claim[i], __ATOMIC_RELAXED) != CLAIM_PUBLISHED) {
		memcpy(&job->recs[i], &rec, sizeof(rec));
		__atomic_store_n(&job->claim[i], CLAIM_PUBLISHED, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&job->lock);
	if (err && !is_skipped(err, job->skip, job->n_skip))
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

/*
 * The fd numbers files may be kept at ([*base, ...)) and how many: 0 when the soft
 * RLIMIT_NOFILE leaves no room above the numbers the caller is likely to use.
 */
static int hold_window(int *base)
{
	struct rlimit rl;
	rlim_t soft, low;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 0;
	soft = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT_MAX ? INT_MAX : rl.rlim_cur;
	low = soft / 2;
	if (low < HOLD_BASE_MIN)
		low = HOLD_BASE_MIN;
	if (low > HOLD_BASE_MAX)
		low = HOLD_BASE_MAX;
	*base = (int)low;
	if (soft <= low)
		return 0;
	return soft / 4 < HOLD_MAX_FDS ? (int)(soft / 4) : HOLD_MAX_FDS;
}

static void free_kept(void)
{
	free(kept.pids);
	free(kept.slots);
	kept.pids = NULL;
	kept.slots = NULL;
	kept.n = 0;
}

/*
 * Gives the job what the last full scan kept, matched to its records (by increasing
 * pid), within the bounds of this scan (the fd window and max_bytes: a file past
 * them is closed, as are the files of processes no longer listed). Nothing when
 * another scan has them (it reads as if none were kept) or on no memory. Under
 * fd_lock, with the job registered.
 */
static void take_kept(struct scan_job *job, const struct record *recs, long max_bytes)
{
	Py_ssize_t i, j = 0;
	int k;

	if (__atomic_exchange_n(&kept.busy, 1, __ATOMIC_ACQUIRE))
		return;
	job->room.files = hold_window(&job->hold_base);
	job->room.bytes = max_bytes;
	job->held = malloc((job->n ? job->n : 1) * sizeof(*job->held));
	if (!job->held) {
		__atomic_store_n(&kept.busy, 0, __ATOMIC_RELEASE);
		return;
	}
	for (i = 0; i < job->n; i++) {
		held_init(&job->held[i]);
		while (j < kept.n && kept.pids[j] < recs[i].pid)
			held_close(&kept.slots[j++]);
		if (j < kept.n && kept.pids[j] == recs[i].pid) {
			struct held *from = &kept.slots[j++];

			for (k = 0; k < N_HELD; k++) {
				struct held_file *hf = &from->f[k];

				if (hf->fd < 0)
					continue;
				if (job->room.files > 0 && job->room.bytes >= hf->cost) {
					job->held[i].f[k] = *hf;
					job->room.files--;
					job->room.bytes -= hf->cost;
				} else if (held_is_ours(hf)) {
					close(hf->fd);
				}
				hf->fd = -1;
			}
		}
	}
	while (j < kept.n)
		held_close(&kept.slots[j++]);
	free_kept();
}

/*
 * What the job kept becomes what the next full scan takes: its pids (increasing,
 * those of a full scan) and slots move over whole; a slot with no file open is
 * passed over by take_kept's merge as any unmatched one is. Under fd_lock.
 */
static void give_back_kept(struct scan_job *job)
{
	kept.pids = job->pids;
	kept.slots = job->held;
	kept.n = job->n;
	job->pids = NULL;
	job->held = NULL;
	__atomic_store_n(&kept.busy, 0, __ATOMIC_RELEASE);
}

/* Closes the kept files and forgets them; the caller owns kept (busy, or alone). */
static void close_kept(void)
{
	Py_ssize_t j;

	fds_lock();
	for (j = 0; j < kept.n; j++)
		held_close(&kept.slots[j]);
	free_kept();
	fds_unlock();
}

static void free_job(struct scan_job *job)
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
		fds_lock();
		if (job->held)
			give_back_kept(job);
		unregister_job(job);
		fds_unlock();
		pthread_mutex_destroy(&job->lock);
		free_job(job);
	}
}

static void *worker(void *arg)
{
	struct scan_job *job = arg;
	struct reader r;
	int err;

	/* A worker that cannot set up reads nothing: the caller reads what is left. */
	fds_lock();
	err = reader_open(&r, job);
	fds_unlock();
	if (!err) {
		scan_blocks(job, &r);
		fds_lock();
		reader_close(&r, job);
		fds_unlock();
	}
	leave_job(job);
	return NULL;
}

/* How many threads for n records: one per MIN_PER_THREAD, at most one per CPU that
 * this process may run on, and at most MAX_THREADS. */
static int scan_threads(Py_ssize_t n, int wanted)
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
static int run_scan(struct record *recs, Py_ssize_t n, const int *skip, int n_skip,
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
			free_job(job);
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
	fds_lock();
	register_job(job);
	if (hold)
		take_kept(job, recs, max_bytes);
	err = reader_open(&r, job);
	if (err) {
		if (job->held)
			give_back_kept(job);
		unregister_job(job);
		fds_unlock();
		pthread_mutex_destroy(&job->lock);
		free_job(job);
		return err;
	}
	fds_unlock();
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
	fds_lock();
	reader_close(&r, job);
	fds_unlock();
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
static int list_proc(struct record **recs, Py_ssize_t *count)
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

/* The errnos to skip, into skip[]: each a positive int, at most MAX_SKIP_ERRNOS
 * different ones. Returns how many, or -1 with an exception set. */
static int parse_skip(PyObject *skip_errnos, int *skip)
{
	PyObject *iter, *item;
	int n_skip = 0;

	iter = PyObject_GetIter(skip_errnos);
	if (!iter)
		return -1;
	while ((item = PyIter_Next(iter))) {
		long value = PyLong_AsLong(item);

		Py_DECREF(item);
		if (value == -1 && PyErr_Occurred())
			break;
		if (value <= 0 || value > INT_MAX) {
			PyErr_Format(PyExc_ValueError, "scan(): %ld is not an errno", value);
			break;
		}
		if (is_skipped((int)value, skip, n_skip))
			continue;
		if (n_skip == MAX_SKIP_ERRNOS) {
			PyErr_SetString(PyExc_ValueError, "scan(): at most 16 errnos to skip");
			break;
		}
		skip[n_skip++] = (int)value;
	}
	Py_DECREF(iter);
	return PyErr_Occurred() ? -1 : n_skip;
}

/*
 * The pids into new records (*recs, *count). The items are converted from a tuple
 * of the caller's: converting one may run Python code (__index__), which may change
 * the caller's list but not the tuple, whose references keep every item alive.
 */
static int parse_pids(PyObject *pids, struct record **recs, Py_ssize_t *count)
{
	PyObject *tuple = PySequence_Tuple(pids);
	Py_ssize_t i, n;

	if (!tuple)
		return -1;
	n = PyTuple_GET_SIZE(tuple);
	*recs = calloc(n ? n : 1, sizeof(**recs));
	if (!*recs) {
		Py_DECREF(tuple);
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < n; i++) {
		long pid = PyLong_AsLong(PyTuple_GET_ITEM(tuple, i));

		if (pid == -1 && PyErr_Occurred())
			break;
		if (pid < 0) {
			PyErr_Format(PyExc_ValueError, "scan(): %ld is not a pid", pid);
			break;
		}
		(*recs)[i].pid = pid;
	}
	Py_DECREF(tuple);
	if (PyErr_Occurred()) {
		free(*recs);
		*recs = NULL;
		return -1;
	}
	*count = n;
	return 0;
}

static PyObject *scan(PyObject *self, PyObject *args)
{
	PyObject *pids, *skip_errnos, *cls_obj, *result = NULL;
	PyTypeObject *cls;
	struct record *recs = NULL;
	int skip[MAX_SKIP_ERRNOS];
	int wanted_threads = 0;
	int hold = 0;
	Py_ssize_t max_bytes = KEPT_BYTES_DEFAULT;
	int n_skip;
	Py_ssize_t n = 0, i;
	int failed_errno = 0;
	const char *failed_what = "/proc";
	long failed_pid = 0;

	(void)self;
	if (!PyArg_ParseTuple(args, "OO!O|ipn", &pids, &PyType_Type, &cls_obj, &skip_errnos,
			      &wanted_threads, &hold, &max_bytes))
		return NULL;
	cls = (PyTypeObject *)cls_obj;
	if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
		PyErr_SetString(PyExc_TypeError, "scan() needs a tuple subclass");
		return NULL;
	}
	if (max_bytes < 0) {
		PyErr_SetString(PyExc_ValueError, "scan(): max_bytes must not be negative");
		return NULL;
	}
	n_skip = parse_skip(skip_errnos, skip);
	if (n_skip < 0)
		return NULL;
	if (pids != Py_None && parse_pids(pids, &recs, &n))
		return NULL;
	/*
	 * No Python object is touched here: other threads run while /proc is read. Nor
	 * is any Python code run from here on until the records are built (the arguments
	 * were converted above), so a caller cannot come back in while kept is taken.
	 */
	Py_BEGIN_ALLOW_THREADS
	if (!recs) {
		fds_lock();
		failed_errno = list_proc(&recs, &n);
		fds_unlock();
	}
	if (!failed_errno) {
		Py_ssize_t failed_index;

		/* Kept files are matched by pid to the records of a full scan only. */
		failed_errno = run_scan(recs, n, skip, n_skip, scan_threads(n, wanted_threads),
					hold && pids == Py_None, (long)max_bytes, &failed_index);
		if (failed_errno && failed_index >= 0) {
			failed_pid = recs[failed_index].pid;
			failed_what = NULL;
		}
	}
	Py_END_ALLOW_THREADS

	if (failed_errno) {
		char path[64];

		if (!failed_what) {
			snprintf(path, sizeof(path), "/proc/%ld", failed_pid);
			failed_what = path;
		}
		errno = failed_errno;
		PyErr_SetFromErrnoWithFilename(PyExc_OSError, failed_what);
		goto out_free;
	}
	result = PyList_New(0);
	for (i = 0; result && i < n; i++) {
		PyObject *obj;

		if (recs[i].state != READ_OK)
			continue;
		obj = build(cls, &recs[i]);
		if (!obj || PyList_Append(result, obj)) {
			Py_XDECREF(obj);
			Py_CLEAR(result);
			break;
		}
		Py_DECREF(obj);
	}
out_free:
	free(recs);
	return result;
}

/* Closes every kept file; False (and nothing closed) while a scan has them. */
static PyObject *release(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	if (__atomic_exchange_n(&kept.busy, 1, __ATOMIC_ACQUIRE))
		Py_RETURN_FALSE;
	close_kept();
	__atomic_store_n(&kept.busy, 0, __ATOMIC_RELEASE);
	Py_RETURN_TRUE;
}

/*
 * fork()'s handlers (pthread_atfork, so for every fork of the process, os.fork() or
 * a library's): the child gets copies of the parent's fds, and closing them there
 * leaves the parent's open. Only the forking thread lives in the child: the jobs of
 * the others (a scan in another thread, detached workers finishing) will never be
 * left, and are freed by forget_in_child once Python runs again. Only what is safe
 * in a child runs here: close, fstat, and a lock that nothing else may hold.
 */
static void before_fork(void)
{
	pthread_rwlock_wrlock(&fd_lock);
}

static void after_fork_in_parent(void)
{
	pthread_rwlock_unlock(&fd_lock);
}

static void init_fd_lock(void)
{
	pthread_rwlockattr_t attr;

	pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
	pthread_rwlock_init(&fd_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
}

static void after_fork_in_child(void)
{
	struct scan_job *job, *last = NULL;
	Py_ssize_t i;
	int t;

	for (i = 0; i < kept.n; i++)
		held_close(&kept.slots[i]);
	for (job = jobs; job; job = job->next_job) {
		for (i = 0; job->held && i < job->n; i++)
			held_close(&job->held[i]);
		for (t = 0; t < MAX_THREADS; t++) {
			if (job->dirfds[t] >= 0)
				close(job->dirfds[t]);
			job->dirfds[t] = -1;
		}
		last = job;
	}
	if (last) {
		last->next_job = orphans;
		orphans = jobs;
		jobs = NULL;
	}
	/* A scan, release() or kept_fds() of a thread left behind had it. */
	kept.busy = 0;
	/* Held for writing by the thread that forked, which is this one under a new id. */
	init_fd_lock();
}

/* In the child of os.fork(): frees what the scans of threads left in the parent had
 * (their fds were closed at the fork); nothing elsewhere. */
static PyObject *forget_in_child(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	while (orphans) {
		struct scan_job *job = orphans;

		orphans = job->next_job;
		/* job->lock may be held by a thread left behind: never destroyed. */
		free_job(job);
	}
	Py_RETURN_NONE;
}

/* The fds kept (a list, empty while a scan has them), or with bytes=True the kernel
 * memory they are counted as. */
static PyObject *kept_fds(PyObject *self, PyObject *unused)
{
	PyObject *list = PyList_New(0);
	Py_ssize_t j;
	int k;

	(void)self;
	(void)unused;
	if (!list || __atomic_exchange_n(&kept.busy, 1, __ATOMIC_ACQUIRE))
		return list;
	for (j = 0; j < kept.n; j++) {
		for (k = 0; k < N_HELD; k++) {
			PyObject *fd;

			if (kept.slots[j].f[k].fd < 0)
				continue;
			fd = PyLong_FromLong(kept.slots[j].f[k].fd);
			if (!fd || PyList_Append(list, fd)) {
				Py_XDECREF(fd);
				Py_CLEAR(list);
				goto out;
			}
			Py_DECREF(fd);
		}
	}
out:
	__atomic_store_n(&kept.busy, 0, __ATOMIC_RELEASE);
	return list;
}

/* The kernel memory the kept files are counted as (see KEPT_FILE_COST). */
static PyObject *kept_bytes(PyObject *self, PyObject *unused)
{
	long long total = 0;
	Py_ssize_t j;
	int k;

	(void)self;
	(void)unused;
	if (__atomic_exchange_n(&kept.busy, 1, __ATOMIC_ACQUIRE))
		return PyLong_FromLong(0);
	for (j = 0; j < kept.n; j++)
		for (k = 0; k < N_HELD; k++)
			if (kept.slots[j].f[k].fd >= 0)
				total += kept.slots[j].f[k].cost;
	__atomic_store_n(&kept.busy, 0, __ATOMIC_RELEASE);
	return PyLong_FromLongLong(total);
}

static PyMethodDef methods[] = {
	{ "scan", scan, METH_VARARGS,
	  "scan(pids, cls, skip_errnos) -> list: cls(pid, name, reserved_kb, committed_kb,\n"
	  "committed_pct, anon_kb, file_kb, shmem_kb, swap_kb, oom_score, oom_score_adj)\n"
	  "for each process with an address space, in the order of pids (None: every\n"
	  "process in /proc, by increasing pid); one whose reads fail with an errno in\n"
	  "skip_errnos (at most 16) is left out, any other errno raises OSError (the\n"
	  "first in pids).\n"
	  "threads: how many threads read /proc (at most 4); 0 (default): one per 256\n"
	  "processes, at most one per CPU this process may use.\n"
	  "hold: with pids None, read again the files the last such scan kept open and\n"
	  "keep this scan's open for the next (fds at or above half the soft\n"
	  "RLIMIT_NOFILE, close-on-exec), pinning at most max_bytes of kernel memory\n"
	  "(default KEPT_BYTES_DEFAULT; about 9.5 KiB a process)." },
	{ "release", release, METH_NOARGS,
	  "release() -> bool: close every file kept open; False while a scan has them." },
	{ "forget_in_child", forget_in_child, METH_NOARGS,
	  "forget_in_child(): in a forked child, free what scans of other threads had\n"
	  "(their fds, and the kept ones, were closed at the fork)." },
	{ "kept_fds", kept_fds, METH_NOARGS,
	  "kept_fds() -> list: the fds kept open (empty while a scan has them)." },
	{ "kept_bytes", kept_bytes, METH_NOARGS,
	  "kept_bytes() -> int: the kernel memory the kept files are counted as\n"
	  "(0 while a scan has them)." },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "_procscan",
	.m_doc = "The procfs backend's scan of every process, in C.",
	.m_size = -1,
	.m_methods = methods,
};

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static int fork_handlers_err;

static void install_fork_handlers(void)
{
	long size = sysconf(_SC_PAGESIZE);

	if (size > 0)
		page_size = size;
	init_fd_lock();
	fork_handlers_err = pthread_atfork(before_fork, after_fork_in_parent,
					   after_fork_in_child);
}

PyMODINIT_FUNC PyInit__procscan(void)
{
	PyObject *mod;

	pthread_once(&fork_handlers_once, install_fork_handlers);
	if (fork_handlers_err) {
		/* Without them a child would keep the parent's files: procfs.py scans in
		 * Python instead. */
		errno = fork_handlers_err;
		PyErr_SetFromErrno(PyExc_ImportError);
		return NULL;
	}
	mod = PyModule_Create(&module);
	if (mod && PyModule_AddIntConstant(mod, "KEPT_BYTES_DEFAULT", KEPT_BYTES_DEFAULT)) {
		Py_DECREF(mod);
		return NULL;
	}
	return mod;
}
