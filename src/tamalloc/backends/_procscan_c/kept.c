/*
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
#include "kept.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "parse.h"
#include "scan.h"

struct kept ps_kept;

#define HOLD_BASE_MIN 1024
#define HOLD_BASE_MAX 65536
#define HOLD_MAX_FDS (3 * 16384)

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
int ps_read_file(struct proc_path *pp, const char *path, int which, struct buffer *buf,
		 size_t *len)
{
	struct held_file *hf = which != H_NONE && pp->slot ? &pp->slot->f[which] : NULL;
	int err;
	int fd;

	if (hf && hf->fd >= 0) {
		if (held_is_ours(hf) && ps_read_whole(hf->fd, buf, len) == 0) {
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
	err = ps_read_whole(fd, buf, len);
	if (err || !hf || !hold(pp, hf, fd, file_cost(which, *len)))
		close(fd);
	return err;
}

int ps_read_long(struct proc_path *pp, const char *path, int which, struct buffer *buf,
		 long *value)
{
	struct held_file *hf = which != H_NONE && pp->slot ? &pp->slot->f[which] : NULL;
	size_t len;
	int err;

	err = ps_read_file(pp, path, which, buf, &len);
	if (err || !ps_parse_long(buf, value))
		return err;
	/*
	 * No number: a kept fd that another thread replaced between its fstat and its
	 * read (dup2 over it) gave someone else's file.  The kernel's own file always
	 * holds a number, so it is read once more, opened afresh and not kept.
	 */
	if (!hf || hf->fd < 0)
		return EINVAL;
	drop(pp, hf);
	err = ps_read_file(pp, path, H_NONE, buf, &len);
	return err ? err : ps_parse_long(buf, value);
}

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
struct scan_job *ps_orphans;	/* in a forked child: jobs of threads left behind */

void ps_fds_lock(void)
{
	pthread_rwlock_rdlock(&fd_lock);
}

void ps_fds_unlock(void)
{
	pthread_rwlock_unlock(&fd_lock);
}

void ps_register_job(struct scan_job *job)
{
	pthread_mutex_lock(&jobs_lock);
	job->next_job = jobs;
	jobs = job;
	pthread_mutex_unlock(&jobs_lock);
}

void ps_unregister_job(struct scan_job *job)
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
	free(ps_kept.pids);
	free(ps_kept.slots);
	ps_kept.pids = NULL;
	ps_kept.slots = NULL;
	ps_kept.n = 0;
}

/*
 * Gives the job what the last full scan kept, matched to its records (by increasing
 * pid), within the bounds of this scan (the fd window and max_bytes: a file past
 * them is closed, as are the files of processes no longer listed). Nothing when
 * another scan has them (it reads as if none were kept) or on no memory. Under
 * fd_lock, with the job registered.
 */
void ps_take_kept(struct scan_job *job, const struct record *recs, long max_bytes)
{
	Py_ssize_t i, j = 0;
	int k;

	if (__atomic_exchange_n(&ps_kept.busy, 1, __ATOMIC_ACQUIRE))
		return;
	job->room.files = hold_window(&job->hold_base);
	job->room.bytes = max_bytes;
	job->held = malloc((job->n ? job->n : 1) * sizeof(*job->held));
	if (!job->held) {
		__atomic_store_n(&ps_kept.busy, 0, __ATOMIC_RELEASE);
		return;
	}
	for (i = 0; i < job->n; i++) {
		held_init(&job->held[i]);
		while (j < ps_kept.n && ps_kept.pids[j] < recs[i].pid)
			held_close(&ps_kept.slots[j++]);
		if (j < ps_kept.n && ps_kept.pids[j] == recs[i].pid) {
			struct held *from = &ps_kept.slots[j++];

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
	while (j < ps_kept.n)
		held_close(&ps_kept.slots[j++]);
	free_kept();
}

/*
 * What the job kept becomes what the next full scan takes: its pids (increasing,
 * those of a full scan) and slots move over whole; a slot with no file open is
 * passed over by ps_take_kept's merge as any unmatched one is. Under fd_lock.
 */
void ps_give_back_kept(struct scan_job *job)
{
	ps_kept.pids = job->pids;
	ps_kept.slots = job->held;
	ps_kept.n = job->n;
	job->pids = NULL;
	job->held = NULL;
	__atomic_store_n(&ps_kept.busy, 0, __ATOMIC_RELEASE);
}

/* Closes the kept files and forgets them; the caller owns kept (busy, or alone). */
void ps_close_kept(void)
{
	Py_ssize_t j;

	ps_fds_lock();
	for (j = 0; j < ps_kept.n; j++)
		held_close(&ps_kept.slots[j]);
	free_kept();
	ps_fds_unlock();
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

	for (i = 0; i < ps_kept.n; i++)
		held_close(&ps_kept.slots[i]);
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
		last->next_job = ps_orphans;
		ps_orphans = jobs;
		jobs = NULL;
	}
	/* A scan, release() or kept_fds() of a thread left behind had it. */
	ps_kept.busy = 0;
	/* Held for writing by the thread that forked, which is this one under a new id. */
	init_fd_lock();
}


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

/* Sets up this file's state and fork handlers, once per process: 0 or an errno. */
int ps_kept_init(void)
{
	pthread_once(&fork_handlers_once, install_fork_handlers);
	return fork_handlers_err;
}
