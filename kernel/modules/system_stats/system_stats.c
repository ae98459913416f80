// SPDX-License-Identifier: GPL-2.0
/*
 * system_stats - system and per-process memory statistics in /proc
 *
 *   /proc/system_stats       memory, CPU times (all CPUs and each online
 *                            CPU) and the file system of /, as text
 *   /proc/system_stats.json  the same values as one JSON object
 *   /proc/mem_stats_all      every user process as JSON, with totals
 *   /proc/mem_watch          write a PID, read that process as JSON
 *
 * The formats are described in README.md next to this file.
 *
 * Everything is read from kernel state, never from a file: a file path
 * is resolved in the reader's mount namespace, where a bind mount can
 * put anything behind it, this module's own files included.
 *
 * The per-process figures come from tamalloc_read_mem_stats() of the
 * tamalloc series, the code behind get_mem_stats(), so that they and the
 * OOM score are exactly the syscall's and /proc's; which processes a
 * reader sees follows the hidepid= option and pid namespace of the procfs
 * mount the file is read through, as /proc/PID does.  The module needs a
 * kernel with that series.  Where fs/proc/stat.c computes CPU times with
 * helpers that are not exported (nsec_to_clock_t(), get_idle_time()),
 * the same computation is repeated here so that the numbers agree.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/fs_struct.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/kernel_stat.h>
#include <linux/magic.h>
#include <linux/math64.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/path.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
#include <linux/proc_fs.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/statfs.h>
#include <linux/string.h>
#include <linux/swap.h>
#include <linux/tamalloc.h>
#include <linux/threads.h>
#include <linux/tick.h>
#include <linux/time64.h>
#include <linux/types.h>
#include <linux/vmstat.h>

#define SSTAT_KB(pages)	((u64)(pages) << (PAGE_SHIFT - 10))

/* @a + @b, or U64_MAX where the sum does not fit: a counter never wraps. */
static u64 sstat_add_sat(u64 a, u64 b)
{
	u64 sum;

	return check_add_overflow(a, b, &sum) ? U64_MAX : sum;
}

/* ------------------------------------------------------------------ */
/* Memory                                                              */
/* ------------------------------------------------------------------ */

struct sstat_mem {
	u64 total_kb;
	u64 used_kb;
	u64 free_kb;
	u64 available_kb;
	u64 buffers_kb;
	u64 cached_kb;
};

/* The same values as MemTotal, MemFree, ... in fs/proc/meminfo.c. */
static void sstat_mem_fetch(struct sstat_mem *mem)
{
	struct sysinfo i;
	long available;
	long cached;

	si_meminfo(&i);
	available = si_mem_available();
	cached = global_node_page_state(NR_FILE_PAGES) -
		 total_swapcache_pages() - i.bufferram;
	if (cached < 0)
		cached = 0;

	mem->total_kb = SSTAT_KB(i.totalram);
	mem->free_kb = SSTAT_KB(i.freeram);
	mem->available_kb = SSTAT_KB(available);
	mem->buffers_kb = SSTAT_KB(i.bufferram);
	mem->cached_kb = SSTAT_KB(cached);
	/* As procps free(1) 4.x: used = total - available. */
	if (mem->total_kb > mem->available_kb)
		mem->used_kb = mem->total_kb - mem->available_kb;
	else
		mem->used_kb = 0;
}

/* ------------------------------------------------------------------ */
/* CPU                                                                 */
/* ------------------------------------------------------------------ */

enum {
	SSTAT_CPU_USER,
	SSTAT_CPU_NICE,
	SSTAT_CPU_SYSTEM,
	SSTAT_CPU_IDLE,
	SSTAT_CPU_IOWAIT,
	SSTAT_CPU_IRQ,
	SSTAT_CPU_SOFTIRQ,
	SSTAT_CPU_STEAL,
	SSTAT_CPU_NR,
};

static const char * const sstat_cpu_names[SSTAT_CPU_NR] = {
	"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
};

/*
 * nsec_to_clock_t() of kernel/time/time.c, which is not exported.  Where
 * that multiplies before dividing (USER_HZ not a divisor of NSEC_PER_SEC,
 * not x86), the product is kept in 96 bits here so that it cannot wrap: the
 * multiplier is below the divisor, so the quotient fits and cannot trap.
 */
static u64 sstat_nsec_to_clock_t(u64 x)
{
#if (NSEC_PER_SEC % USER_HZ) == 0
	return div_u64(x, NSEC_PER_SEC / USER_HZ);
#elif (USER_HZ % 512) == 0
	return mul_u64_u32_div(x, USER_HZ, NSEC_PER_SEC);
#else
	return mul_u64_u32_div(x, 9,
			       (9ull * NSEC_PER_SEC + (USER_HZ / 2)) / USER_HZ);
#endif
}

/* Microseconds of idle accounting in nanoseconds, saturated. */
static u64 sstat_usecs_to_ns(u64 usecs)
{
	u64 ns;

	return check_mul_overflow(usecs, (u64)NSEC_PER_USEC, &ns) ? U64_MAX : ns;
}

/*
 * get_idle_time() and get_iowait_time() of fs/proc/stat.c (static there).
 * Architectures with arch_idle_time() (s390) fall back to the raw counters.
 */
static u64 sstat_idle_ns(const struct kernel_cpustat *kcs, int cpu)
{
	u64 usecs = -1ULL;

#ifndef arch_idle_time
	if (cpu_online(cpu))
		usecs = get_cpu_idle_time_us(cpu, NULL);
#endif
	if (usecs == -1ULL)
		return kcs->cpustat[CPUTIME_IDLE];
	return sstat_usecs_to_ns(usecs);
}

static u64 sstat_iowait_ns(const struct kernel_cpustat *kcs, int cpu)
{
	u64 usecs = -1ULL;

#ifndef arch_idle_time
	if (cpu_online(cpu))
		usecs = get_cpu_iowait_time_us(cpu, NULL);
#endif
	if (usecs == -1ULL)
		return kcs->cpustat[CPUTIME_IOWAIT];
	return sstat_usecs_to_ns(usecs);
}

/*
 * Adds the times of @cpu, in nanoseconds, to @ns.  The sum over all CPUs
 * saturates where /proc/stat's wraps (2^64 ns: 584 CPU-years, a few months
 * of a machine with a thousand CPUs).
 */
static void sstat_cpu_add_ns(int cpu, u64 *ns)
{
	struct kernel_cpustat kcs;
	u64 t[SSTAT_CPU_NR];
	int i;

	kcpustat_cpu_fetch(&kcs, cpu);
	t[SSTAT_CPU_USER] = kcs.cpustat[CPUTIME_USER];
	t[SSTAT_CPU_NICE] = kcs.cpustat[CPUTIME_NICE];
	t[SSTAT_CPU_SYSTEM] = kcs.cpustat[CPUTIME_SYSTEM];
	t[SSTAT_CPU_IDLE] = sstat_idle_ns(&kcs, cpu);
	t[SSTAT_CPU_IOWAIT] = sstat_iowait_ns(&kcs, cpu);
	t[SSTAT_CPU_IRQ] = kcs.cpustat[CPUTIME_IRQ];
	t[SSTAT_CPU_SOFTIRQ] = kcs.cpustat[CPUTIME_SOFTIRQ];
	t[SSTAT_CPU_STEAL] = kcs.cpustat[CPUTIME_STEAL];
	for (i = 0; i < SSTAT_CPU_NR; i++)
		ns[i] = sstat_add_sat(ns[i], t[i]);
}

static void sstat_ns_to_ticks(const u64 *ns, u64 *ticks)
{
	int i;

	for (i = 0; i < SSTAT_CPU_NR; i++)
		ticks[i] = sstat_nsec_to_clock_t(ns[i]);
}

/* The "cpu" line of /proc/stat: summed over possible CPUs, then converted. */
static void sstat_cpu_total(u64 *ticks)
{
	u64 ns[SSTAT_CPU_NR] = { 0 };
	int cpu;

	for_each_possible_cpu(cpu)
		sstat_cpu_add_ns(cpu, ns);
	sstat_ns_to_ticks(ns, ticks);
}

/* The "cpuN" line of /proc/stat. */
static void sstat_cpu_one(int cpu, u64 *ticks)
{
	u64 ns[SSTAT_CPU_NR] = { 0 };

	sstat_cpu_add_ns(cpu, ns);
	sstat_ns_to_ticks(ns, ticks);
}

/* ------------------------------------------------------------------ */
/* Disk                                                                */
/* ------------------------------------------------------------------ */

struct sstat_disk {
	u64 total_kb;
	u64 free_kb;
	u64 available_kb;
	unsigned int used_permille;	/* 1000 * used / (used + available) */
};

/*
 * Every figure of a statfs is the file system's word, and a FUSE server
 * (which any user may mount in a user namespace) chooses its own: up to
 * 2^64 - 1 blocks of up to 4 GiB.  So nothing below multiplies, adds or
 * divides without knowing that the result fits, and no division has a
 * divisor that can be 0 or a quotient that can exceed 64 bits (x86's divq
 * raises #DE, an oops, on either).
 */

/* @blocks of @frsize bytes in kB, rounded down; U64_MAX where that does not fit. */
static u64 sstat_blocks_kb(u64 blocks, u64 frsize)
{
	u64 whole, kb;

	/*
	 * blocks * frsize / 1024 = blocks * (frsize / 1024) +
	 * blocks * (frsize % 1024) / 1024, exactly; the second term is below
	 * blocks, and computed in 96 bits without a division.
	 */
	if (check_mul_overflow(blocks, frsize >> 10, &whole) ||
	    check_add_overflow(whole, mul_u64_u32_shr(blocks, frsize & 1023, 10),
			       &kb))
		return U64_MAX;
	return kb;
}

/*
 * As df(1): of what an ordinary user can fill (the blocks kept for root
 * count as neither), the share in use, in tenths of a percent rounded to
 * the nearest; 0..1000 whatever the figures.
 */
static unsigned int sstat_used_permille(u64 blocks, u64 bfree, u64 bavail)
{
	u64 used, whole;
	int excess;

	/* More free blocks than blocks: nothing is in use. */
	if (bfree >= blocks)
		return 0;
	used = blocks - bfree;
	/* used + bavail in 65 bits: halve both terms where the sum does not fit. */
	if (check_add_overflow(used, bavail, &whole)) {
		used >>= 1;
		whole = used + (bavail >> 1);
	}
	/*
	 * used <= whole, and whole > 0 since used > 0.  Drop low bits of both
	 * until 2000 * whole fits in 64 bits (only past 2^53 blocks, where a
	 * tenth of a percent cannot see them), so that the division is exact
	 * 64-bit arithmetic that cannot trap.
	 */
	excess = fls64(whole) - 53;
	if (excess > 0) {
		used >>= excess;
		whole >>= excess;
	}
	return (div64_u64(used * 2000, whole) + 1) / 2;
}

/* statfs() of the reader's root directory, without a path lookup. */
static int sstat_disk_fetch(struct sstat_disk *disk)
{
	struct kstatfs st;
	struct path root;
	u64 frsize;
	int err;

	get_fs_root(current->fs, &root);
	err = vfs_statfs(&root, &st);
	path_put(&root);
	if (err)
		return err;

	/*
	 * statvfs(3) counts blocks in f_frsize units (f_bsize when unset);
	 * both are longs that a file system may set to anything, taken as
	 * unsigned: a "negative" size saturates like a huge one.
	 */
	frsize = st.f_frsize ? (unsigned long)st.f_frsize :
			       (unsigned long)st.f_bsize;
	disk->total_kb = sstat_blocks_kb(st.f_blocks, frsize);
	disk->free_kb = sstat_blocks_kb(st.f_bfree, frsize);
	disk->available_kb = sstat_blocks_kb(st.f_bavail, frsize);
	disk->used_permille = sstat_used_permille(st.f_blocks, st.f_bfree,
						  st.f_bavail);
	return 0;
}

/* ------------------------------------------------------------------ */
/* /proc/system_stats and /proc/system_stats.json                      */
/* ------------------------------------------------------------------ */

static int sstat_text_show(struct seq_file *m, void *v)
{
	u64 ticks[SSTAT_CPU_NR];
	struct sstat_disk disk;
	struct sstat_mem mem;
	int cpu, i, err;

	err = sstat_disk_fetch(&disk);
	if (err)
		return err;
	sstat_mem_fetch(&mem);

	seq_puts(m, "[memory]\n");
	seq_printf(m, "total_kb %llu\n", mem.total_kb);
	seq_printf(m, "used_kb %llu\n", mem.used_kb);
	seq_printf(m, "free_kb %llu\n", mem.free_kb);
	seq_printf(m, "available_kb %llu\n", mem.available_kb);
	seq_printf(m, "buffers_kb %llu\n", mem.buffers_kb);
	seq_printf(m, "cached_kb %llu\n", mem.cached_kb);

	seq_puts(m, "\n[cpu]\n# name");
	for (i = 0; i < SSTAT_CPU_NR; i++)
		seq_printf(m, " %s", sstat_cpu_names[i]);
	seq_puts(m, " (USER_HZ ticks)\n");

	sstat_cpu_total(ticks);
	seq_puts(m, "cpu");
	for (i = 0; i < SSTAT_CPU_NR; i++)
		seq_printf(m, " %llu", ticks[i]);
	seq_putc(m, '\n');

	for_each_online_cpu(cpu) {
		sstat_cpu_one(cpu, ticks);
		seq_printf(m, "cpu%d", cpu);
		for (i = 0; i < SSTAT_CPU_NR; i++)
			seq_printf(m, " %llu", ticks[i]);
		seq_putc(m, '\n');
	}

	seq_puts(m, "\n[disk /]\n");
	seq_printf(m, "total_kb %llu\n", disk.total_kb);
	seq_printf(m, "free_kb %llu\n", disk.free_kb);
	seq_printf(m, "available_kb %llu\n", disk.available_kb);
	seq_printf(m, "used_pct %u.%u\n", disk.used_permille / 10,
		   disk.used_permille % 10);
	return 0;
}

static void sstat_json_cpu(struct seq_file *m, const u64 *ticks)
{
	int i;

	for (i = 0; i < SSTAT_CPU_NR; i++)
		seq_printf(m, "%s\"%s\": %llu", i ? ", " : "",
			   sstat_cpu_names[i], ticks[i]);
}

static int sstat_json_show(struct seq_file *m, void *v)
{
	u64 ticks[SSTAT_CPU_NR];
	struct sstat_disk disk;
	struct sstat_mem mem;
	bool first = true;
	int cpu, err;

	err = sstat_disk_fetch(&disk);
	if (err)
		return err;
	sstat_mem_fetch(&mem);

	seq_printf(m, "{\"memory\": {\"total_kb\": %llu, \"used_kb\": %llu, ",
		   mem.total_kb, mem.used_kb);
	seq_printf(m, "\"free_kb\": %llu, \"available_kb\": %llu, ",
		   mem.free_kb, mem.available_kb);
	seq_printf(m, "\"buffers_kb\": %llu, \"cached_kb\": %llu}, ",
		   mem.buffers_kb, mem.cached_kb);

	sstat_cpu_total(ticks);
	seq_puts(m, "\"cpu\": {\"total\": {");
	sstat_json_cpu(m, ticks);
	seq_puts(m, "}, \"per_cpu\": [");
	for_each_online_cpu(cpu) {
		sstat_cpu_one(cpu, ticks);
		seq_printf(m, "%s{\"cpu\": %d, ", first ? "" : ", ", cpu);
		sstat_json_cpu(m, ticks);
		seq_putc(m, '}');
		first = false;
	}
	seq_puts(m, "]}, ");

	seq_printf(m, "\"disk\": {\"path\": \"/\", \"total_kb\": %llu, ",
		   disk.total_kb);
	seq_printf(m, "\"free_kb\": %llu, \"available_kb\": %llu, ",
		   disk.free_kb, disk.available_kb);
	seq_printf(m, "\"used_pct\": %u.%u}}\n", disk.used_permille / 10,
		   disk.used_permille % 10);
	return 0;
}

static int sstat_text_open(struct inode *inode, struct file *file)
{
	return single_open(file, sstat_text_show, NULL);
}

static int sstat_json_open(struct inode *inode, struct file *file)
{
	return single_open(file, sstat_json_show, NULL);
}

static const struct proc_ops sstat_text_ops = {
	.proc_open	= sstat_text_open,
	.proc_read_iter	= seq_read_iter,
	.proc_lseek	= seq_lseek,
	.proc_release	= single_release,
};

static const struct proc_ops sstat_json_ops = {
	.proc_open	= sstat_json_open,
	.proc_read_iter	= seq_read_iter,
	.proc_lseek	= seq_lseek,
	.proc_release	= single_release,
};

/* ------------------------------------------------------------------ */
/* One process                                                         */
/* ------------------------------------------------------------------ */

/*
 * The process of @task (a thread-group leader, referenced by the caller)
 * as get_mem_stats() reports it, numbered in @ns.  Returns false if it is
 * hidden from the reader by the hidepid= option of the procfs mount
 * @fs_info, or has been reaped; *@has_mm says whether it has memory (not a
 * kernel thread, not a process whose threads have all exited).
 */
static bool sstat_proc_fill(struct task_struct *task,
			    struct proc_fs_info *fs_info,
			    struct tamalloc_mem_stats *r, bool *has_mm)
{
	int err;

	/* What /proc/PID/status shows to this reader through this mount. */
	if (!has_pid_permissions(fs_info, task, HIDEPID_NO_ACCESS))
		return false;
	err = tamalloc_read_mem_stats(task, fs_info->pid_ns, r);
	*has_mm = !err;
	return err != -ESRCH;
}

/*
 * Length of the UTF-8 sequence at @s in *@len.  Returns false for an
 * ill-formed sequence; *@len is then the length of its maximal subpart
 * (Unicode 15, section 3.9), which is replaced by one U+FFFD, as Python's
 * bytes.decode("utf-8", "replace") does.  Stops at the terminating NUL.
 */
static bool sstat_utf8_seq(const unsigned char *s, unsigned int *len)
{
	unsigned char lo = 0x80, hi = 0xbf;
	unsigned int need, i;
	unsigned char c = s[0];

	if (c < 0x80) {
		*len = 1;
		return true;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		*len = 1;
		return false;
	}

	for (i = 1; i <= need; i++) {
		if (s[i] < lo || s[i] > hi) {
			*len = i;
			return false;
		}
		lo = 0x80;
		hi = 0xbf;
	}
	*len = need + 1;
	return true;
}

/* Prints @str as a JSON string. */
static void sstat_json_str(struct seq_file *m, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	unsigned int len;

	seq_putc(m, '"');
	while (*s) {
		if (!sstat_utf8_seq(s, &len)) {
			seq_puts(m, "\\ufffd");
		} else if (len > 1) {
			seq_write(m, s, len);
		} else {
			switch (*s) {
			case '"':
				seq_puts(m, "\\\"");
				break;
			case '\\':
				seq_puts(m, "\\\\");
				break;
			case '\b':
				seq_puts(m, "\\b");
				break;
			case '\f':
				seq_puts(m, "\\f");
				break;
			case '\n':
				seq_puts(m, "\\n");
				break;
			case '\r':
				seq_puts(m, "\\r");
				break;
			case '\t':
				seq_puts(m, "\\t");
				break;
			default:
				if (*s < 0x20 || *s == 0x7f)
					seq_printf(m, "\\u%04x", *s);
				else
					seq_putc(m, *s);
			}
		}
		s += len;
	}
	seq_putc(m, '"');
}

static void sstat_proc_json(struct seq_file *m,
			    const struct tamalloc_mem_stats *r)
{
	seq_printf(m, "{\"pid\": %d, \"name\": ", r->pid);
	sstat_json_str(m, r->comm);
	seq_printf(m, ", \"vm_size_kb\": %llu, \"vm_rss_kb\": %llu, ",
		   r->reserved_kb, r->committed_kb);
	seq_printf(m, "\"oom_score\": %d, \"oom_score_adj\": %d}",
		   r->oom_score, r->oom_score_adj);
}

/* ------------------------------------------------------------------ */
/* /proc/mem_stats_all                                                 */
/* ------------------------------------------------------------------ */

/*
 * Positions: 0 is the header, tgid + 1 is the process tgid (as in
 * proc_pid_readdir(), so a read resumes at the next pid even when
 * processes come and go), SSTAT_ALL_POS_END is the trailer with the totals.
 */
#define SSTAT_ALL_POS_END	((loff_t)PID_MAX_LIMIT + 2)
#define SSTAT_ALL_HEADER	((void *)1)
#define SSTAT_ALL_TRAILER	((void *)2)

struct sstat_all {
	struct proc_fs_info *fs_info;	/* of the mount it is read through */
	unsigned int tgid;		/* of the current record */
	bool shown;			/* rec is the current record */
	struct tamalloc_mem_stats rec;
	/* Totals of the records emitted so far (accounted in ->next()). */
	u64 processes;
	u64 vm_size_kb;
	u64 vm_rss_kb;
};

/*
 * Finds the first user process whose tgid in the mount's pid namespace
 * is at least *pos - 1, as next_tgid() of fs/proc/base.c does: look the
 * pid up under RCU, take a reference to the task, drop RCU.
 */
static void *sstat_all_find(struct sstat_all *st, loff_t *pos)
{
	struct task_struct *task = NULL;
	unsigned int tgid = *pos - 1;
	struct pid *pid;

	rcu_read_lock();
	for (;;) {
		pid = find_ge_pid(tgid, st->fs_info->pid_ns);
		if (!pid)
			break;
		tgid = pid_nr_ns(pid, st->fs_info->pid_ns);
		task = pid_task(pid, PIDTYPE_TGID);
		if (task && !(task->flags & PF_KTHREAD)) {
			get_task_struct(task);
			break;
		}
		task = NULL;
		tgid++;
	}
	rcu_read_unlock();

	if (!task) {
		*pos = SSTAT_ALL_POS_END;
		return SSTAT_ALL_TRAILER;
	}
	st->tgid = tgid;
	*pos = (loff_t)tgid + 1;
	return task;
}

static void *sstat_all_start(struct seq_file *m, loff_t *pos)
{
	struct sstat_all *st = m->private;

	st->shown = false;
	if (*pos == 0) {
		st->processes = 0;
		st->vm_size_kb = 0;
		st->vm_rss_kb = 0;
		return SSTAT_ALL_HEADER;
	}
	if (*pos < SSTAT_ALL_POS_END)
		return sstat_all_find(st, pos);
	if (*pos == SSTAT_ALL_POS_END)
		return SSTAT_ALL_TRAILER;
	return NULL;
}

/*
 * seq_file calls ->next() exactly once for each record that went into the
 * output; a record that did not fit is shown again later without ->next()
 * in between.  So the totals are accumulated here, not in ->show().
 */
static void *sstat_all_next(struct seq_file *m, void *v, loff_t *pos)
{
	struct sstat_all *st = m->private;

	if (v == SSTAT_ALL_TRAILER) {
		*pos = SSTAT_ALL_POS_END + 1;
		return NULL;
	}
	if (v == SSTAT_ALL_HEADER) {
		*pos = 1;
	} else {
		if (st->shown) {
			/*
			 * Any user can map 64 PiB (2^46 kB, la57) with
			 * MAP_NORESERVE; 2^22 processes of that wrap a u64.
			 */
			st->processes++;
			st->vm_size_kb = sstat_add_sat(st->vm_size_kb,
						       st->rec.reserved_kb);
			st->vm_rss_kb = sstat_add_sat(st->vm_rss_kb,
						      st->rec.committed_kb);
		}
		put_task_struct(v);
		*pos = (loff_t)st->tgid + 2;
	}
	st->shown = false;
	return sstat_all_find(st, pos);
}

static void sstat_all_stop(struct seq_file *m, void *v)
{
	if (v && v != SSTAT_ALL_HEADER && v != SSTAT_ALL_TRAILER)
		put_task_struct(v);
}

static int sstat_all_show(struct seq_file *m, void *v)
{
	struct sstat_all *st = m->private;
	bool has_mm;

	if (v == SSTAT_ALL_HEADER) {
		seq_puts(m, "{\"processes\": [\n");
		return 0;
	}
	if (v == SSTAT_ALL_TRAILER) {
		seq_printf(m, "%s], \"totals\": {\"processes\": %llu, ",
			   st->processes ? "\n" : "", st->processes);
		seq_printf(m, "\"vm_size_kb\": %llu, \"vm_rss_kb\": %llu}}\n",
			   st->vm_size_kb, st->vm_rss_kb);
		return 0;
	}

	/* Hidden from this reader, or exited (zombie, reaped) since found. */
	if (!sstat_proc_fill(v, st->fs_info, &st->rec, &has_mm) || !has_mm)
		return SEQ_SKIP;
	if (st->processes)
		seq_puts(m, ",\n");
	sstat_proc_json(m, &st->rec);
	st->shown = true;
	return 0;
}

static const struct seq_operations sstat_all_seq_ops = {
	.start	= sstat_all_start,
	.next	= sstat_all_next,
	.stop	= sstat_all_stop,
	.show	= sstat_all_show,
};

/*
 * The procfs mount's info lives as long as its superblock, which the open
 * file pins, so neither it nor its pid namespace needs a reference.
 */
static int sstat_all_open(struct inode *inode, struct file *file)
{
	struct sstat_all *st;

	st = __seq_open_private(file, &sstat_all_seq_ops, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->fs_info = proc_sb_info(inode->i_sb);
	return 0;
}

static const struct proc_ops sstat_all_ops = {
	.proc_open	= sstat_all_open,
	.proc_read_iter	= seq_read_iter,
	.proc_lseek	= seq_lseek,
	.proc_release	= seq_release_private,
};

/* ------------------------------------------------------------------ */
/* /proc/mem_watch                                                     */
/* ------------------------------------------------------------------ */

/*
 * The selection belongs to the open file: two users who open the file
 * separately never see each other's choice.  The selected process is kept
 * as a reference to its struct pid, so a pid reused by another process
 * after the selected one exits is not picked up by mistake.
 */
struct sstat_watch {
	struct mutex lock;		/* protects pid and nr */
	struct pid *pid;		/* TGID pid of the selection, or NULL */
	pid_t nr;			/* its number in the mount's pid ns */
	struct proc_fs_info *fs_info;	/* of the mount it is read through */
};

#define SSTAT_WATCH_MAX_INPUT	32

static int sstat_watch_show(struct seq_file *m, void *v)
{
	struct sstat_watch *w = m->private;
	struct tamalloc_mem_stats r;
	struct task_struct *task;
	bool shown = false;
	bool has_mm;
	struct pid *pid;
	pid_t nr;

	mutex_lock(&w->lock);
	pid = get_pid(w->pid);
	nr = w->nr;
	mutex_unlock(&w->lock);

	if (!pid) {
		seq_puts(m, "{\"error\": \"no process selected\"}\n");
		return 0;
	}
	task = get_pid_task(pid, PIDTYPE_TGID);
	put_pid(pid);
	if (task) {
		/* Kernel threads have no memory but are shown, as in /proc. */
		shown = sstat_proc_fill(task, w->fs_info, &r, &has_mm) &&
			(has_mm || (task->flags & PF_KTHREAD));
		put_task_struct(task);
	}
	/* A process this reader may not see reads as gone, never as itself. */
	if (!shown) {
		seq_printf(m, "{\"error\": \"process exited\", \"pid\": %d}\n",
			   nr);
		return 0;
	}
	sstat_proc_json(m, &r);
	seq_putc(m, '\n');
	return 0;
}

/*
 * Writing a pid (decimal, optionally followed by a newline) selects its
 * process; a thread id selects the process the thread belongs to.  A pid
 * that the reader could not see in this /proc mount gives ESRCH, as if it
 * did not exist.  On error the previous selection stays.  The file
 * position is reset so that the next read(2) on the same descriptor shows
 * the new selection.
 */
static ssize_t sstat_watch_write(struct file *file, const char __user *ubuf,
				 size_t count, loff_t *ppos)
{
	struct seq_file *m = file->private_data;
	struct sstat_watch *w = m->private;
	struct pid_namespace *ns = w->fs_info->pid_ns;
	struct task_struct *task, *leader = NULL;
	struct pid *pid = NULL;
	struct pid *old;
	pid_t tgid;
	int nr, err;

	if (!count || count > SSTAT_WATCH_MAX_INPUT)
		return -EINVAL;
	err = kstrtoint_from_user(ubuf, count, 10, &nr);
	if (err == -EFAULT)
		return err;
	if (err || nr <= 0)
		return -EINVAL;

	/*
	 * A thread id selects its process.  The task attached to the
	 * thread-group pid is safe to pin under RCU, unlike a group_leader
	 * pointer that de_thread() may be replacing.
	 */
	rcu_read_lock();
	task = pid_task(find_pid_ns(nr, ns), PIDTYPE_PID);
	if (task)
		leader = pid_task(task_tgid(task), PIDTYPE_TGID);
	if (leader) {
		get_task_struct(leader);
		pid = get_task_pid(leader, PIDTYPE_TGID);
	}
	rcu_read_unlock();
	if (!leader)
		return -ESRCH;

	/* The permission check may sleep: outside RCU, with a reference. */
	err = -ESRCH;
	tgid = pid_nr_ns(pid, ns);
	if (!tgid || !has_pid_permissions(w->fs_info, leader, HIDEPID_NO_ACCESS))
		goto put_pid;

	mutex_lock(&w->lock);
	old = w->pid;
	w->pid = pid;
	w->nr = tgid;
	mutex_unlock(&w->lock);
	pid = old;

	*ppos = 0;
	err = count;
put_pid:
	put_pid(pid);
	put_task_struct(leader);
	return err;
}

static int sstat_watch_open(struct inode *inode, struct file *file)
{
	struct sstat_watch *w;
	int err;

	w = kzalloc(sizeof(*w), GFP_KERNEL);
	if (!w)
		return -ENOMEM;
	mutex_init(&w->lock);
	/* Pinned by the open file, as for /proc/mem_stats_all. */
	w->fs_info = proc_sb_info(inode->i_sb);

	err = single_open(file, sstat_watch_show, w);
	if (err) {
		mutex_destroy(&w->lock);
		kfree(w);
	}
	return err;
}

static int sstat_watch_release(struct inode *inode, struct file *file)
{
	struct seq_file *m = file->private_data;
	struct sstat_watch *w = m->private;
	int ret;

	ret = single_release(inode, file);
	put_pid(w->pid);
	mutex_destroy(&w->lock);
	kfree(w);
	return ret;
}

static const struct proc_ops sstat_watch_ops = {
	.proc_open	= sstat_watch_open,
	.proc_read_iter	= seq_read_iter,
	.proc_write	= sstat_watch_write,
	.proc_lseek	= seq_lseek,
	.proc_release	= sstat_watch_release,
};

/* ------------------------------------------------------------------ */
/* Module                                                              */
/* ------------------------------------------------------------------ */

static const struct {
	const char *name;
	umode_t mode;
	const struct proc_ops *ops;
} sstat_files[] = {
	{ "system_stats",	0444, &sstat_text_ops },
	{ "system_stats.json",	0444, &sstat_json_ops },
	{ "mem_stats_all",	0444, &sstat_all_ops },
	{ "mem_watch",		0644, &sstat_watch_ops },
};

static void sstat_remove_files(unsigned int n)
{
	while (n--)
		remove_proc_entry(sstat_files[n].name, NULL);
}

static int __init sstat_init(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(sstat_files); i++) {
		if (!proc_create(sstat_files[i].name, sstat_files[i].mode, NULL,
				 sstat_files[i].ops)) {
			pr_err("cannot create /proc/%s\n", sstat_files[i].name);
			sstat_remove_files(i);
			return -ENOMEM;
		}
	}
	return 0;
}

/* remove_proc_entry() waits for running reads and releases open files. */
static void __exit sstat_exit(void)
{
	sstat_remove_files(ARRAY_SIZE(sstat_files));
}

module_init(sstat_init);
module_exit(sstat_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("tamalloc project");
MODULE_DESCRIPTION("System and per-process memory statistics in /proc");
