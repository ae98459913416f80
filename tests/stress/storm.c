// SPDX-License-Identifier: GPL-2.0
/*
 * storm: an exit/exec/fork/thread storm while scanner threads walk every
 * process with get_mem_stats(0, ...), sum them with get_total_mem_stats()
 * and read the system_stats module's /proc files, with /proc/mem_watch
 * pointed at processes that are exiting.  Optionally the module is loaded
 * and unloaded in a loop (finit_module/delete_module, as insmod/rmmod), and
 * optionally a tamalloc() hog is grown until the OOM killer takes it.
 *
 *   storm [-p PROCESSES] [-j SCANNERS] [-m system_stats.ko] [-r PID_MAX] [-o]
 *         [-s SEED]
 *
 *   -p  processes to create (default 1000), of these kinds in turn: fork and
 *       _exit, vfork and _exit, fork+exec, a process whose threads come and
 *       go, exit_group from a thread while others run, a zombie leader (the
 *       main thread pthread_exit()s while other threads live), and now and
 *       then pid reuse forced through /proc/sys/kernel/ns_last_pid
 *   -j  scanner threads (default 3)
 *   -m  load/unload this module in a loop meanwhile; its files may then be
 *       absent (ENOENT) or go away under a reader (EIO).  Without -m the
 *       files are read if the module is loaded, and must then work.
 *   -r  set kernel.pid_max to this meanwhile (restored after), so that pid
 *       numbers wrap and are reused all the time
 *   -o  then the OOM phase: a child maps twice MemTotal with tamalloc() and
 *       touches it; it must die of SIGKILL while scans keep succeeding.
 *
 * Every record is checked for self-consistency (stress_common.h), every
 * walk for increasing pids, every mem_stats_all file for records that add
 * up to its totals, every mem_watch read for the pid written or "process
 * exited".  A zombie leader must be listed with its memory (it has an mm
 * through its live threads), and a thread id must give its process's pid
 * and name.  Exits 1 if anything was invalid, 2 on a setup error.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "stress_common.h"

#define MODULE_NAME	"system_stats"
#define RECENT		64
#define FILEBUF		(8u << 20)

/* ---- shared state ------------------------------------------------------- */

static volatile int stop_scanners, stop_module, oom_phase;
static int module_loop, module_present, self;
static const char *ko_path;
static char self_comm[16];
static char *self_exe;

/* Recently created children, for mem_watch and for get_mem_stats(pid). */
static pid_t recent[RECENT];
static unsigned int recent_next;

static unsigned long processes, threads, child_threads_total, exec_children, zombie_leaders;
static unsigned long reuse_tries, reuse_hits, module_cycles, module_busy;
static unsigned long hog_pages;

struct scan_stats {
	unsigned long walks, records, totals, single, files, watch;
	unsigned long watch_exited, file_gone, overflows;
};

static void remember(pid_t pid)
{
	__atomic_store_n(&recent[__atomic_fetch_add(&recent_next, 1, __ATOMIC_RELAXED) %
			 RECENT], pid, __ATOMIC_RELAXED);
}

static pid_t some_recent(unsigned int r)
{
	return __atomic_load_n(&recent[r % RECENT], __ATOMIC_RELAXED);
}

static uint64_t seed_rng = 88172645463325252ull;

static uint64_t rnd_r(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void msleep(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the system calls ---------------------------------------------------- */

/* One walk of every process; records are checked, pids must increase. */
static long walk(unsigned char **buf, unsigned int *cap, unsigned int size,
		 struct scan_stats *st, pid_t want)
{
	long n, i;
	int found = 0;

	for (;;) {
		n = sys_get_mem_stats(0, *buf, size, *cap, 0);
		if (n >= 0)
			break;
		if (errno != EOVERFLOW) {
			fail("get_mem_stats(0, cap %u) = %s", *cap, errname(errno));
			return -1;
		}
		st->overflows++;
		*cap *= 2;
		*buf = realloc(*buf, (size_t)*cap * MAX_RECORD_SIZE);
		if (!*buf) {
			fprintf(stderr, "realloc failed\n");
			exit(2);
		}
	}
	if (n == 0 || (unsigned long)n > *cap) {
		fail("get_mem_stats(0) = %ld with room for %u", n, *cap);
		return -1;
	}
	st->walks++;
	st->records += n;
	for (i = 0; i < n; i++) {
		const unsigned char *rec = *buf + (size_t)i * size;
		const char *why = check_mem_record(rec, size, RSS_SLACK_KB);
		pid_t pid = (pid_t)rd32(rec);

		if (why)
			fail("walk record %ld (pid %d): %s", i, pid, why);
		if (i && pid <= (pid_t)rd32(rec - size))
			fail("walk: pid %d after %d", pid, (pid_t)rd32(rec - size));
		if (pid == want)
			found = 1;
	}
	if (want && !found)
		return 0;
	return n;
}

static void one_pid(pid_t pid, struct scan_stats *st)
{
	unsigned char rec[MEM_VER0 + 40];
	const char *why;
	long r;

	if (pid <= 0)
		return;
	r = sys_get_mem_stats(pid, rec, sizeof(rec), 1, 0);
	if (r < 0) {
		if (errno != ESRCH)
			fail("get_mem_stats(%d) = %s", pid, errname(errno));
		return;
	}
	st->single++;
	why = check_mem_record(rec, sizeof(rec), RSS_SLACK_KB);
	if (r != 1 || why)
		fail("get_mem_stats(%d) = %ld: %s", pid, r, why ? why : "not 1");
}

static void totals(struct scan_stats *st)
{
	unsigned char rec[128];
	const char *why;

	if (sys_get_total_mem_stats(rec, sizeof(rec), 0)) {
		fail("get_total_mem_stats = %s", errname(errno));
		return;
	}
	st->totals++;
	why = check_total_record(rec, sizeof(rec));
	if (why)
		fail("get_total_mem_stats: %s", why);
}

/* ---- the module's files -------------------------------------------------- */

/*
 * Errors a read of the module's files may give: none when the module stays
 * loaded; ENOENT/EIO while it is being loaded and unloaded; ENOMEM during
 * the OOM phase (seq_file buffers).
 */
static int file_error_ok(int e)
{
	if (module_loop && (e == ENOENT || e == EIO))
		return 1;
	if (oom_phase && e == ENOMEM)
		return 1;
	return 0;
}

static ssize_t read_file(const char *path, char *buf, size_t cap, int *err)
{
	ssize_t n, got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*err = 0;
	if (fd < 0) {
		*err = errno;
		return -1;
	}
	while ((size_t)got < cap - 1 && (n = read(fd, buf + got, cap - 1 - got)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			*err = errno;
			close(fd);
			return -1;
		}
		got += n;
	}
	buf[got] = 0;
	close(fd);
	return got;
}

static unsigned long long field(const char *line, const char *key, int *ok)
{
	const char *p = strstr(line, key);
	char *end;
	long long v;

	if (!p) {
		*ok = 0;
		return 0;
	}
	v = strtoll(p + strlen(key), &end, 10);
	if (end == p + strlen(key))
		*ok = 0;
	return (unsigned long long)v;
}

/* /proc/mem_stats_all: one record a line, increasing pids, exact totals. */
static void check_mem_stats_all(char *text)
{
	unsigned long long sum_size = 0, sum_rss = 0, n = 0;
	char *line, *save = NULL, *last_line = NULL;
	long long prev = 0;
	int ok = 1;

	if (strncmp(text, "{\"processes\": [\n", 16)) {
		fail("mem_stats_all: bad start: %.40s", text);
		return;
	}
	for (line = strtok_r(text + 16, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		long long pid, score, adj;
		unsigned long long size, rss;

		last_line = line;
		if (!strncmp(line, "], \"totals\": ", 13))
			break;
		ok = 1;
		pid = (long long)field(line, "{\"pid\": ", &ok);
		size = field(line, "\"vm_size_kb\": ", &ok);
		rss = field(line, "\"vm_rss_kb\": ", &ok);
		score = (long long)field(line, "\"oom_score\": ", &ok);
		adj = (long long)field(line, "\"oom_score_adj\": ", &ok);
		if (!ok || strncmp(line, "{\"pid\": ", 8)) {
			fail("mem_stats_all: bad record line: %.120s", line);
			return;
		}
		if (pid <= prev)
			fail("mem_stats_all: pid %lld after %lld", pid, prev);
		if (size && rss > size + RSS_SLACK_KB)
			fail("mem_stats_all: pid %lld vm_rss_kb %llu > vm_size_kb %llu",
			     pid, rss, size);
		if (score < 0 || score > 2000 || adj < -1000 || adj > 1000)
			fail("mem_stats_all: pid %lld oom_score %lld adj %lld", pid, score, adj);
		prev = pid;
		sum_size += size;
		sum_rss += rss;
		n++;
	}
	if (!last_line || strncmp(last_line, "], \"totals\": ", 13)) {
		fail("mem_stats_all: no totals line");
		return;
	}
	ok = 1;
	if (field(last_line, "{\"processes\": ", &ok) != n ||
	    field(last_line, "\"vm_size_kb\": ", &ok) != sum_size ||
	    field(last_line, "\"vm_rss_kb\": ", &ok) != sum_rss || !ok)
		fail("mem_stats_all: totals %.120s, records: %llu, %llu, %llu",
		     last_line, n, sum_size, sum_rss);
}

static void read_module_files(char *buf, struct scan_stats *st)
{
	static const char *const plain[] = { "/proc/system_stats", "/proc/system_stats.json" };
	unsigned int i;
	int err;

	for (i = 0; i < 2; i++) {
		if (read_file(plain[i], buf, FILEBUF, &err) < 0) {
			if (file_error_ok(err))
				st->file_gone++;
			else
				fail("read %s: %s", plain[i], strerror(err));
			continue;
		}
		st->files++;
		if (i == 0 ? strncmp(buf, "[memory]\ntotal_kb ", 18) :
			     strncmp(buf, "{\"memory\": {\"total_kb\": ", 24))
			fail("%s: unexpected content: %.60s", plain[i], buf);
		if (i == 0 && !strstr(buf, "\n[disk /]\n"))
			fail("/proc/system_stats: no disk section");
	}
	if (read_file("/proc/mem_stats_all", buf, FILEBUF, &err) < 0) {
		if (file_error_ok(err))
			st->file_gone++;
		else
			fail("read /proc/mem_stats_all: %s", strerror(err));
		return;
	}
	st->files++;
	check_mem_stats_all(buf);
}

/*
 * mem_watch pointed at a process that is exiting: the write selects it or
 * fails with ESRCH; a read gives its record or "process exited", never the
 * record of another pid.
 */
static int is_recent(pid_t pid)
{
	unsigned int i;

	for (i = 0; i < RECENT; i++)
		if (some_recent(i) == pid)
			return 1;
	return 0;
}

static void watch(pid_t pid, struct scan_stats *st)
{
	char text[512], want[64];
	ssize_t n;
	int fd, other;

	if (pid <= 0)
		return;
	fd = open("/proc/mem_watch", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		if (!file_error_ok(errno))
			fail("open /proc/mem_watch: %s", strerror(errno));
		else
			st->file_gone++;
		return;
	}
	n = snprintf(text, sizeof(text), "%d\n", pid);
	if (write(fd, text, n) != n) {
		if (errno != ESRCH && !file_error_ok(errno))
			fail("write %d to /proc/mem_watch: %s", pid, strerror(errno));
		close(fd);
		return;
	}
	n = pread(fd, text, sizeof(text) - 1, 0);
	close(fd);
	if (n < 0) {
		if (!file_error_ok(errno))
			fail("read /proc/mem_watch (pid %d): %s", pid, strerror(errno));
		return;
	}
	text[n] = 0;
	st->watch++;
	snprintf(want, sizeof(want), "{\"pid\": %d, \"name\": ", pid);
	if (!strncmp(text, want, strlen(want)))
		return;
	/*
	 * With pid_max small the number may already belong to a thread: of the
	 * storm itself (its thread churn) or of one of its children.  A thread
	 * id selects its process.
	 */
	if (sscanf(text, "{\"pid\": %d, \"name\": ", &other) == 1 &&
	    (other == self || is_recent(other)))
		return;
	snprintf(want, sizeof(want), "{\"error\": \"process exited\", \"pid\": %d}", pid);
	if (!strncmp(text, want, strlen(want))) {
		st->watch_exited++;
		return;
	}
	fail("/proc/mem_watch after writing %d: %.200s", pid, text);
}

static int module_files_wanted(void)
{
	return module_loop || module_present;
}

/* ---- scanners -------------------------------------------------------------- */

static struct scan_stats scan_total;
static pthread_mutex_t scan_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long scan_rounds;	/* completed rounds, all scanners */

static void *scanner(void *arg)
{
	uint64_t s = seed_rng ^ (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull;
	unsigned int cap = 64, size;
	unsigned char *buf = malloc((size_t)cap * MAX_RECORD_SIZE);
	char *file = malloc(FILEBUF);
	struct scan_stats st = { 0 };

	if (!buf || !file)
		exit(2);
	while (!stop_scanners) {
		/* record sizes VER0, a little larger, a page */
		long n, k;

		size = (unsigned int[]){ MEM_VER0, MEM_VER0 + 8, 128, 4096 }[rnd_r(&s) % 4];
		n = walk(&buf, &cap, size, &st, 0);
		/* a few of the listed pids again, one by one: there or ESRCH */
		for (k = 0; n > 0 && k < 4; k++)
			one_pid((pid_t)rd32(buf + (size_t)(rnd_r(&s) % n) * size), &st);
		totals(&st);
		one_pid(some_recent((unsigned int)rnd_r(&s)), &st);
		if (module_files_wanted()) {
			if (rnd_r(&s) % 4 == 0)
				read_module_files(file, &st);
			watch(some_recent((unsigned int)rnd_r(&s)), &st);
		}
		__atomic_fetch_add(&scan_rounds, 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_lock(&scan_lock);
	scan_total.walks += st.walks;
	scan_total.records += st.records;
	scan_total.totals += st.totals;
	scan_total.single += st.single;
	scan_total.files += st.files;
	scan_total.watch += st.watch;
	scan_total.watch_exited += st.watch_exited;
	scan_total.file_gone += st.file_gone;
	scan_total.overflows += st.overflows;
	pthread_mutex_unlock(&scan_lock);
	free(buf);
	free(file);
	return NULL;
}

/* ---- module load/unload loop -------------------------------------------- */

static int load_module(void)
{
	int fd = open(ko_path, O_RDONLY | O_CLOEXEC);
	long r;

	if (fd < 0) {
		fail("open %s: %s", ko_path, strerror(errno));
		return -1;
	}
	r = syscall(SYS_finit_module, fd, "", 0);
	close(fd);
	if (r && errno != EEXIST) {
		fail("finit_module: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static int unload_module(void)
{
	while (syscall(SYS_delete_module, MODULE_NAME, O_NONBLOCK)) {
		if (errno == ENOENT)
			return 0;
		if (errno != EWOULDBLOCK && errno != EBUSY) {
			fail("delete_module: %s", strerror(errno));
			return -1;
		}
		module_busy++;		/* a reader holds it: retry */
		msleep(2);
	}
	return 0;
}

static void *module_thread(void *arg)
{
	uint64_t s = seed_rng ^ 0x1234;

	(void)arg;
	while (!stop_module) {
		if (load_module())
			break;
		/* loaded long enough for readers to get in, then pulled away */
		msleep(200 + rnd_r(&s) % 300);
		if (unload_module())
			break;
		module_cycles++;
		msleep(rnd_r(&s) % 10);
	}
	return NULL;
}

/* ---- the kinds of processes ---------------------------------------------- */

static void *short_thread(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "st-thread", 0, 0, 0);
	return NULL;
}

static void *exiting_thread(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "st-exiter", 0, 0, 0);
	syscall(SYS_exit_group, 0);	/* while the other threads run */
	return NULL;
}

static void *spinning_thread(void *arg)
{
	(void)arg;
	for (;;)
		sched_yield();
	return NULL;
}

struct zl { int to_parent, from_parent; pthread_t leader; };

/*
 * In a zombie leader: wait until the main thread is gone, tell the parent,
 * hold the process alive until the parent has looked, then end it.
 */
static void *zl_thread(void *arg)
{
	struct zl *z = arg;
	char c = 'z';

	pthread_join(z->leader, NULL);
	if (write(z->to_parent, &c, 1) != 1)
		_exit(4);
	if (read(z->from_parent, &c, 1) < 0)
		_exit(4);
	_exit(0);
}

/* Touch some memory, so that memory figures are not all zero. */
static void touch_some(void)
{
	size_t len = 64u << 10;
	long p = sys_tamalloc(len, 0);

	if (p > 0)
		memset((void *)p, 1, len);
}

static void child_threads(int n, int exit_from_thread)
{
	pthread_t t[4];
	int i;

	touch_some();
	for (i = 0; i < n; i++)
		if (pthread_create(&t[i], NULL, exit_from_thread && i == n - 1 ?
				   exiting_thread : (exit_from_thread ? spinning_thread :
						     short_thread), NULL))
			_exit(3);
	if (exit_from_thread)
		for (;;)
			pause();
	for (i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	_exit(0);
}

static void zombie_leader_child(int to_parent, int from_parent)
{
	static struct zl z;
	pthread_t t;

	touch_some();
	z.to_parent = to_parent;
	z.from_parent = from_parent;
	z.leader = pthread_self();
	if (pthread_create(&t, NULL, zl_thread, &z))
		_exit(3);
	pthread_exit(NULL);
}

/* A zombie leader has its memory, through the live thread: it must show. */
static void check_zombie_leader(pid_t pid)
{
	unsigned char rec[MEM_VER0];
	unsigned int cap = 256;
	unsigned char *buf = malloc((size_t)cap * MAX_RECORD_SIZE);
	struct scan_stats st = { 0 };
	long r;

	if (!buf)
		exit(2);
	r = sys_get_mem_stats(pid, rec, MEM_VER0, 1, 0);
	if (r != 1)
		fail("zombie leader %d: get_mem_stats = %s", pid, errname(errno));
	else if ((pid_t)rd32(rec) != pid || !rd64(rec + 32) || !rd64(rec + 40))
		fail("zombie leader %d: record pid %d, reserved %llu kB, committed %llu kB "
		     "(want its pid and its memory)", pid, (pid_t)rd32(rec),
		     (unsigned long long)rd64(rec + 32), (unsigned long long)rd64(rec + 40));
	if (walk(&buf, &cap, MEM_VER0, &st, pid) == 0)
		fail("zombie leader %d: not in get_mem_stats(0, ...)", pid);
	free(buf);
}

/* A thread id gives the process: our pid and the main thread's name. */
static void *tid_thread(void *arg)
{
	struct tamalloc_mem_stats st;
	pid_t tid = (pid_t)syscall(SYS_gettid);

	(void)arg;
	prctl(PR_SET_NAME, "st-tid", 0, 0, 0);
	if (sys_get_mem_stats(tid, &st, sizeof(st), 1, 0) != 1)
		fail("get_mem_stats(own thread id %d) = %s", tid, errname(errno));
	else if (st.pid != self || strncmp(st.comm, self_comm, sizeof(st.comm)))
		fail("get_mem_stats(thread id): pid %d comm \"%.16s\", want %d \"%s\"",
		     st.pid, st.comm, self, self_comm);
	return NULL;
}

static void *thread_churn(void *arg)
{
	unsigned long *stop_after = arg;
	unsigned long i;
	pthread_t t;

	for (i = 0; i < *stop_after; i++) {
		if (pthread_create(&t, NULL, i % 8 ? short_thread : tid_thread, NULL)) {
			fail("pthread_create: out of threads");
			break;
		}
		pthread_join(t, NULL);
		__atomic_fetch_add(&threads, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static int write_int(const char *path, int v)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	char text[16];
	int n = snprintf(text, sizeof(text), "%d", v), ok;

	if (fd < 0)
		return -1;
	ok = write(fd, text, n) == n;
	close(fd);
	return ok ? 0 : -1;
}

static int read_int(const char *path)
{
	FILE *f = fopen(path, "r");
	int v = -1;

	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static int pid_max = 32768;

/* Reap children, in any order, until at most @left are in flight. */
static void reap_down_to(int *inflight, int left)
{
	while (*inflight > left) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (pid < 0)
			break;
		(*inflight)--;
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			fail("child %d: status %#x", pid, status);
	}
}

/* A child that waits for its SIGKILL; counted as a process the storm made. */
static pid_t fork_paused(void)
{
	pid_t pid = fork();

	if (!pid) {
		pause();
		_exit(0);
	}
	if (pid > 0)
		processes++;
	return pid;
}

/*
 * Pid reuse: watch A, reap it, make the next pid A again.  A new process on
 * A's number must not show through the watch, which holds A's struct pid.
 */
static void pid_reuse(void)
{
	char text[512], want[64];
	pid_t a, b = -1;
	int fd = -1, i;
	ssize_t n;

	a = fork_paused();
	if (a < 0)
		return;
	reuse_tries++;
	if (module_files_wanted()) {
		fd = open("/proc/mem_watch", O_RDWR | O_CLOEXEC);
		n = snprintf(text, sizeof(text), "%d\n", a);
		if (fd >= 0 && write(fd, text, n) != n) {
			close(fd);
			fd = -1;
		}
	}
	kill(a, SIGKILL);
	waitpid(a, NULL, 0);
	/*
	 * The next pid is A again: through ns_last_pid where the kernel has it
	 * (CONFIG_CHECKPOINT_RESTORE), else by forking until the numbers wrap
	 * (cheap with -r, a small pid_max).
	 */
	write_int("/proc/sys/kernel/ns_last_pid", a - 1);
	for (i = 0; i < pid_max && i < 4096; i++) {
		b = fork_paused();
		if (b < 0)
			break;
		if (b == a)
			break;
		kill(b, SIGKILL);
		waitpid(b, NULL, 0);
	}
	if (b < 0) {
		if (fd >= 0)
			close(fd);
		return;
	}
	if (b == a) {
		reuse_hits++;
		if (fd >= 0) {
			n = pread(fd, text, sizeof(text) - 1, 0);
			if (n >= 0) {
				text[n] = 0;
				snprintf(want, sizeof(want),
					 "{\"error\": \"process exited\", \"pid\": %d}", a);
				if (strncmp(text, want, strlen(want)))
					fail("mem_watch of reaped %d, number reused: %.200s", a, text);
			} else if (!file_error_ok(errno)) {
				fail("read mem_watch after pid reuse: %s", strerror(errno));
			}
		}
	}
	if (fd >= 0)
		close(fd);
	kill(b, SIGKILL);
	waitpid(b, NULL, 0);
}

static void spawn_one(unsigned long i, int *inflight)
{
	int to_parent[2], from_parent[2];
	pid_t pid;
	char c;

	switch (i % 10) {
	case 0: case 1: case 2:			/* fork, _exit */
		pid = fork();
		if (!pid)
			_exit(0);
		break;
	case 3:					/* vfork, _exit */
		pid = vfork();
		if (!pid)
			_exit(0);
		break;
	case 4:					/* fork, exec */
		pid = fork();
		if (!pid) {
			execl(self_exe, "storm-exec", "--exec-child", (char *)NULL);
			_exit(5);
		}
		exec_children++;
		break;
	case 5: case 6:				/* threads come and go */
		pid = fork();
		if (!pid)
			child_threads(1 + (int)(i / 10 % 4), 0);
		child_threads_total += 1 + i / 10 % 4;
		break;
	case 7:					/* exit_group from a thread */
		pid = fork();
		if (!pid)
			child_threads(2 + (int)(i / 10 % 3), 1);
		child_threads_total += 2 + i / 10 % 3;
		break;
	case 8:					/* zombie leader */
		if (pipe2(to_parent, O_CLOEXEC) || pipe2(from_parent, O_CLOEXEC)) {
			perror("pipe");
			exit(2);
		}
		pid = fork();
		if (!pid) {
			close(to_parent[0]);
			close(from_parent[1]);
			zombie_leader_child(to_parent[1], from_parent[0]);
		}
		close(to_parent[1]);
		close(from_parent[0]);
		if (pid > 0) {
			remember(pid);
			child_threads_total++;
			if (read(to_parent[0], &c, 1) == 1) {
				zombie_leaders++;
				check_zombie_leader(pid);
			} else {
				fail("zombie leader %d never reported", pid);
			}
		}
		close(to_parent[0]);
		close(from_parent[1]);	/* the thread reads EOF and exits */
		break;
	default:
		pid = fork();
		if (!pid) {
			touch_some();
			_exit(0);
		}
		break;
	}
	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	remember(pid);
	processes++;
	(*inflight)++;
}

/* ---- OOM phase ------------------------------------------------------------ */

static unsigned long mem_total_kb(void)
{
	unsigned char rec[64];

	if (sys_get_total_mem_stats(rec, sizeof(rec), 0))
		return 0;
	return rd64(rec + 48);
}

static int oom_hog(void)
{
	unsigned long len = mem_total_kb() * 2048ul, off;
	unsigned long *progress;
	int fd, status;
	unsigned long before;
	pid_t pid;

	progress = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (!len || progress == MAP_FAILED) {
		fprintf(stderr, "oom: setup failed\n");
		return -1;
	}
	pid = fork();
	if (!pid) {
		char *p;

		fd = open("/proc/self/oom_score_adj", O_WRONLY);
		if (fd < 0 || write(fd, "1000", 4) != 4)
			_exit(6);
		close(fd);
		prctl(PR_SET_NAME, "tamalloc-hog", 0, 0, 0);
		p = (char *)sys_tamalloc(len, TAMALLOC_HUGE);
		if ((long)p < 0)
			_exit(7);
		for (off = 0; off < len; off += 4096) {
			p[off] = 1;
			if (!(off & ((1ul << 20) - 1)))
				*progress = off >> 12;
		}
		_exit(8);	/* all of it fit: no OOM */
	}
	if (pid < 0)
		return -1;
	processes++;
	printf("storm: OOM phase: hog %d maps %lu MiB (twice MemTotal) and touches it\n",
	       pid, len >> 20);
	fflush(stdout);
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	hog_pages = *progress;
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail("OOM hog: status %#x, want killed by SIGKILL (exit 6-8: setup, "
		     "tamalloc failed, everything fit)", status);
	printf("storm: OOM phase: hog killed after touching %lu MiB\n", hog_pages >> 8);
	/* scans must go on succeeding after the kill */
	before = __atomic_load_n(&scan_rounds, __ATOMIC_RELAXED);
	while (__atomic_load_n(&scan_rounds, __ATOMIC_RELAXED) < before + 4)
		msleep(10);
	munmap(progress, 4096);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long nproc = 1000, i, churn_threads;
	int nscan = 3, oom = 0, inflight = 0, opt;
	pthread_t scan[16], mod = 0, churn;
	double start, secs;
	int loaded_before, new_pid_max = 0, old_pid_max;

	if (argc == 2 && !strcmp(argv[1], "--exec-child")) {
		struct tamalloc_mem_stats st;

		/* a fresh image looks itself up */
		return sys_get_mem_stats(getpid(), &st, sizeof(st), 1, 0) == 1 ? 0 : 9;
	}
	while ((opt = getopt(argc, argv, "p:j:m:or:s:")) != -1) {
		switch (opt) {
		case 'p': nproc = strtoul(optarg, NULL, 0); break;
		case 'j': nscan = atoi(optarg); break;
		case 'm': ko_path = optarg; break;
		case 'o': oom = 1; break;
		case 'r': new_pid_max = atoi(optarg); break;
		case 's': seed_rng = strtoull(optarg, NULL, 0) | 1; break;
		default:
			fprintf(stderr, "usage: %s [-p PROCESSES] [-j SCANNERS] [-m KO] [-r PID_MAX] [-o] [-s SEED]\n",
				argv[0]);
			return 2;
		}
	}
	if (nscan < 1 || nscan > 16)
		nscan = 3;
	if (sys_get_total_mem_stats(NULL, 0, 0) != -1 || errno != EINVAL) {
		printf("storm: the tamalloc system calls are missing (%s)\n", strerror(errno));
		return 2;
	}
	self = getpid();
	self_exe = realpath("/proc/self/exe", NULL);
	prctl(PR_GET_NAME, self_comm, 0, 0, 0);
	srand((unsigned int)seed_rng);
	loaded_before = !access("/sys/module/" MODULE_NAME, F_OK);
	module_present = loaded_before;
	module_loop = ko_path != NULL;
	old_pid_max = read_int("/proc/sys/kernel/pid_max");
	if (new_pid_max) {
		if (write_int("/proc/sys/kernel/pid_max", new_pid_max)) {
			perror("pid_max");
			return 2;
		}
		pid_max = new_pid_max;
	} else if (old_pid_max > 0) {
		pid_max = old_pid_max;
	}
	printf("storm: seed %#llx, %lu processes, %d scanners, pid_max %d, module %s%s\n",
	       (unsigned long long)seed_rng, nproc, nscan, pid_max,
	       module_loop ? "load/unload loop" : (module_present ? "loaded" : "absent"),
	       oom ? ", then OOM phase" : "");
	fflush(stdout);

	start = now();
	for (i = 0; i < (unsigned long)nscan; i++)
		if (pthread_create(&scan[i], NULL, scanner, (void *)(uintptr_t)(i + 1)))
			return 2;
	if (module_loop && pthread_create(&mod, NULL, module_thread, NULL))
		return 2;
	churn_threads = nproc;
	if (pthread_create(&churn, NULL, thread_churn, &churn_threads))
		return 2;

	for (i = 0; i < nproc; i++) {
		/* forced reuse only where it is cheap: -r or ns_last_pid */
		if (i % 1000 == 100 &&
		    (new_pid_max || !access("/proc/sys/kernel/ns_last_pid", W_OK))) {
			pid_reuse();
			continue;
		}
		spawn_one(i, &inflight);
		/* a few children in flight at once, reaped in any order */
		reap_down_to(&inflight, 7);
	}
	reap_down_to(&inflight, 0);
	pthread_join(churn, NULL);
	stop_module = 1;
	if (module_loop) {
		pthread_join(mod, NULL);
		/* leave the module as we found it */
		if (loaded_before)
			load_module();
		else
			unload_module();
		/* scanners still run: module_loop keeps tolerating absent files */
	}
	if (new_pid_max && old_pid_max > 0)
		write_int("/proc/sys/kernel/pid_max", old_pid_max);
	if (oom) {
		oom_phase = 1;
		if (oom_hog())
			fail("OOM phase could not run");
	}
	stop_scanners = 1;
	for (i = 0; i < (unsigned long)nscan; i++)
		pthread_join(scan[i], NULL);
	secs = now() - start;

	printf("storm: %.1f s: %lu processes (%lu exec, %lu zombie leaders), "
	       "%lu threads in children and %lu in the storm itself; pid reuse %lu/%lu\n",
	       secs, processes, exec_children, zombie_leaders, child_threads_total,
	       threads, reuse_hits, reuse_tries);
	printf("storm: scans: %lu walks (%lu records, %lu EOVERFLOW retries), %lu totals, "
	       "%lu single pids, %lu module files read (%lu absent/unloaded), "
	       "%lu mem_watch reads (%lu \"process exited\"), %lu module load/unload cycles "
	       "(%lu busy retries)\n",
	       scan_total.walks, scan_total.records, scan_total.overflows, scan_total.totals,
	       scan_total.single, scan_total.files, scan_total.file_gone, scan_total.watch,
	       scan_total.watch_exited, module_cycles, module_busy);
	if (oom)
		printf("storm: OOM: hog touched %lu MiB before SIGKILL\n", hog_pages >> 8);
	print_kinds();
	printf("storm: %lu invalid: %s\n", invalid, invalid ? "FAILED" : "OK");
	return invalid ? 1 : 0;
}
