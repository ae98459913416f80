// SPDX-License-Identifier: GPL-2.0-only
/*
 * A task iterator (Linux 5.8+) that writes one struct tam_bpf_rec (memstats.h) per
 * process the reader's pid namespace shows, in one read() of the iterator's fd.
 *
 * No vmlinux.h: the few kernel structures read are declared below, each field with
 * preserve_access_index, so libbpf relocates every access against the running kernel's
 * BTF at load time and the object does not depend on the kernel of the machine that
 * built it.  Where layouts differ between kernels, a "flavour" per layout
 * (struct x___name: libbpf ignores the suffix) and bpf_core_field_exists() pick the one
 * the running kernel has; nothing else in the program knows the kernel's version.
 *
 * The task and what hangs from it are read with plain loads: the iterator's task is a
 * BTF-typed pointer, and so is every pointer loaded from it, which the verifier turns
 * into loads that read 0 instead of faulting (as bpf_probe_read_kernel would, at a
 * fraction of a helper call's cost: a pass of 1,000 processes took 1.1 ms with
 * BPF_CORE_READ everywhere).  A task that is exiting while it is visited gives zeros
 * for what is gone, never a fault.  The pid-namespace walk, whose array index is a
 * variable, the reader's task (bpf_get_current_task(), a plain number) and the RSS
 * atomics up to 6.1 keep bpf_probe_read_kernel (BPF_CORE_READ): see there why.
 *
 * The iterator holds the task and RCU, which keep the task, its signal_struct, pids and
 * css_set, but not its mm (freed without RCU once the task drops it): the record of an
 * mm is kept only if the task still has that mm after it was read, a re-check made
 * through a helper call, which the compiler cannot move the loads before it across
 * (see tam_memstats).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "memstats.h"

#define PAI __attribute__((preserve_access_index))

#define PF_EXITING	0x00000004
#define SIGNAL_GROUP_EXIT	0x00000004	/* include/linux/sched/signal.h */
#define PF_KTHREAD	0x00200000
#define MMF_OOM_SKIP	21	/* include/linux/sched/coredump.h (mm_types.h since 6.17) */
/* The rss_stat indexes (include/linux/mm_types_task.h), unchanged since 4.5; the enum is
 * anonymous in the kernel, so bpf_core_enum_value cannot name it. */
#define MM_FILEPAGES	0
#define MM_ANONPAGES	1
#define MM_SWAPENTS	2
#define MM_SHMEMPAGES	3

typedef _Bool bool;
typedef struct { long counter; } atomic_long_t;
typedef struct { int counter; } atomic_t;

/* up to 6.1: atomic counters in one struct */
struct mm_rss_stat { atomic_long_t count[4]; } PAI;
struct mm_struct___atomic { struct mm_rss_stat rss_stat; } PAI;
/* 6.2+: one percpu_counter each; /proc reads the approximate count */
struct percpu_counter { __s64 count; } PAI;
struct mm_struct___percpu { struct percpu_counter rss_stat[4]; } PAI;
/* mm->flags: an unsigned long, or since 6.17 mm_flags_t, a bitmap whose first word
 * holds the MMF_* bits below 64 */
struct mm_struct___flagsword { unsigned long flags; } PAI;
struct mm_struct___flagsbitmap { struct { unsigned long __mm_flags[1]; } flags; } PAI;

struct mm_struct {
	unsigned long total_vm;
	atomic_long_t pgtables_bytes;
	atomic_t mm_users;
} PAI;

struct kernfs_node { __u64 id; } PAI;
struct cgroup { struct kernfs_node *kn; } PAI;
struct css_set { struct cgroup *dfl_cgrp; } PAI;
struct pid_namespace;
struct upid { int nr; struct pid_namespace *ns; } PAI;
struct pid { unsigned int level; struct upid numbers[1]; } PAI;
struct signal_struct {
	unsigned int flags;
	int nr_threads;
	void *core_state;
	bool oom_flag_origin;
	short oom_score_adj;
	struct mm_struct *oom_mm;
} PAI;

struct task_struct {
	unsigned int flags;
	struct mm_struct *mm;
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	void *vfork_done;
	char comm[16];
	struct signal_struct *signal;
	struct css_set *cgroups;
} PAI;

struct seq_file;
struct bpf_iter_meta { struct seq_file *seq; } PAI;
struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; } PAI;

char LICENSE[] SEC("license") = "GPL";

/* The upid of ``pid`` at ``level``: its number and namespace there. */
static __always_inline struct upid *upid_at(struct pid *pid, unsigned int level)
{
	return (struct upid *)((char *)pid + bpf_core_field_offset(struct pid, numbers) +
			       (__u64)level * bpf_core_type_size(struct upid));
}

/* pid_nr_ns(pid, ns): the number ``ns`` (at ``level``) gives ``pid``; 0 if none. */
static __always_inline __u32 nr_in_ns(struct pid *pid, unsigned int level,
				      struct pid_namespace *ns)
{
	struct upid *up;

	if (!pid || BPF_CORE_READ(pid, level) < level)
		return 0;
	up = upid_at(pid, level);
	if (BPF_CORE_READ(up, ns) != ns)
		return 0;
	return BPF_CORE_READ(up, nr);
}

/* get_mm_counter(): the counter, a negative one read as 0 as /proc does.  The atomics
 * through the helper: the verifier of 6.1 cannot walk BTF into an array of typedefs
 * ("Type 'atomic_long_t' is not a struct"). */
#define RSS(mm, i) ({								\
	long __v;								\
	if (bpf_core_field_exists(((struct mm_struct___percpu *)(mm))->rss_stat))	\
		__v = ((struct mm_struct___percpu *)(mm))->rss_stat[i].count;	\
	else									\
		__v = BPF_CORE_READ((struct mm_struct___atomic *)(mm),		\
				    rss_stat.count[i].counter);			\
	__v < 0 ? 0 : (__u64)__v;						\
})

static __always_inline unsigned long mm_flags_word(struct mm_struct *mm)
{
	struct mm_struct___flagsbitmap *bm = (void *)mm;
	struct mm_struct___flagsword *w = (void *)mm;

	if (bpf_core_field_exists(bm->flags.__mm_flags))
		return bm->flags.__mm_flags[0];
	return w->flags;
}

SEC("iter/task")
int tam_memstats(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct task_struct *leader, *cur;
	struct pid_namespace *ns;
	struct signal_struct *sig;
	struct tam_bpf_rec rec;
	struct mm_struct *mm;
	unsigned int tflags, level;
	struct pid *cpid;

	if (!task)
		return 0;	/* the end of the pass */
	tflags = task->flags;
	if (tflags & PF_KTHREAD)
		return 0;
	__builtin_memset(&rec, 0, sizeof(rec));
	mm = task->mm;
	leader = task->group_leader;
	if (task->pid != task->tgid) {
		/* Threads only stand in for a leader without mm (a zombie leader): user
		 * space takes the first such record of the process. */
		if (!mm || leader->mm)
			return 0;
		rec.flags = TAM_BPF_THREAD;
	} else if (!mm) {
		rec.flags = TAM_BPF_NO_MM;
	}

	/* The reader's pid namespace: the iterator shows only its tasks, and the record
	 * carries the number it gives them (the reader is current while read() runs). */
	cur = (struct task_struct *)bpf_get_current_task();
	cpid = BPF_CORE_READ(cur, thread_pid);
	if (!cpid)
		return 0;
	level = BPF_CORE_READ(cpid, level);
	ns = BPF_CORE_READ(upid_at(cpid, level), ns);
	/* Through the helper: a BTF pointer to the pid would take the variable offset of
	 * upid_at(), which the verifier refuses before 6.x ("math between ptr_ pointer and
	 * register with unbounded min value"); a number read by the helper may. */
	rec.pid = nr_in_ns(BPF_CORE_READ(leader, thread_pid), level, ns);
	if (!rec.pid)
		return 0;	/* gone from the namespace meanwhile */

	BPF_CORE_READ_INTO(&rec.comm, leader, comm);
	rec.cgroup_id = leader->cgroups->dfl_cgrp->kn->id;
	sig = task->signal;
	rec.oom_score_adj = sig->oom_score_adj;
	if (sig->oom_flag_origin)
		rec.flags |= TAM_BPF_OOM_ORIGIN;
	if (sig->oom_mm)
		rec.flags |= TAM_BPF_OOM_VICTIM;
	if (task->tgid == 1)	/* is_global_init() */
		rec.flags |= TAM_BPF_GLOBAL_INIT;

	if (mm) {
		rec.total_vm = mm->total_vm;
		rec.file = RSS(mm, MM_FILEPAGES);
		rec.anon = RSS(mm, MM_ANONPAGES);
		rec.swap = RSS(mm, MM_SWAPENTS);
		rec.shmem = RSS(mm, MM_SHMEMPAGES);
		if (bpf_core_field_exists(mm->pgtables_bytes)) {
			long pt = mm->pgtables_bytes.counter;

			rec.pgtables = pt < 0 ? 0 : (__u64)pt;
		} else {
			rec.flags |= TAM_BPF_NO_PGTABLES;
		}
		if (mm_flags_word(mm) & (1UL << MMF_OOM_SKIP))
			rec.flags |= TAM_BPF_OOM_SKIP;
		/* task_will_free_mem() (mm/oom_kill.c) of the task holding the mm: an OOM
		 * choosing the process would let it exit and kill nobody new.  Not during a
		 * coredump (it may sleep for long), not once the reaper is done (unkillable
		 * instead), and not when the mm has more users than the process has threads:
		 * another process on it that is not exiting makes the kernel kill after all
		 * (the kernel walks every process for that; the patched kernel's record
		 * makes the same cut).  Before 5.15 the coredump's state is the mm's, not
		 * read here. */
		if (!(bpf_core_field_exists(sig->core_state) && sig->core_state) &&
		    !(rec.flags & TAM_BPF_OOM_SKIP) &&
		    mm->mm_users.counter <= sig->nr_threads &&
		    ((sig->flags & SIGNAL_GROUP_EXIT) ||
		     (sig->nr_threads == 1 && (tflags & PF_EXITING))))
			rec.flags |= TAM_BPF_EXITING;
		/* in_vfork(): a vfork child on its parent's mm until it execs or exits */
		if (task->vfork_done && task->real_parent->mm == mm)
			rec.flags |= TAM_BPF_VFORK;
		/* exit_mm() (or exec) clears task->mm before the task's reference to the mm
		 * goes, and only then can the mm be freed and its memory reused: if the task
		 * still has it now, everything read above was read while it was alive (the
		 * helper calls run in order; x86 keeps loads in order). Otherwise the task
		 * is exiting or exec'ing: no record rather than another mm's figures. */
		if (BPF_CORE_READ(task, mm) != mm)
			return 0;
	}
	bpf_seq_write(seq, &rec, sizeof(rec));
	return 0;
}
