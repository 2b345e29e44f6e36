/*
 * Serving requests and the named processes.
 *
 * The agent (named "init", pid 1) reads requests from the host.  A request
 * names its target process; init serves its own and forwards the others,
 * unchanged, to the named process over a pair of pipes, then relays the
 * reply.  Every named process is a child of init (a named process forks
 * with CLONE_PARENT), so init reaps them all and reports how they ended.
 *
 * Pipes, not sockets: the test kernels have no networking (no AF_UNIX).  A
 * named process that forks makes its new child's two pipes itself and keeps
 * init's ends until init has taken copies of them with pidfd_getfd(2) (see
 * child_fork() for why it is this way round).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define MAX_PROCS 64
/* How long init waits for a named process to answer or to end. */
#define CHILD_REPLY_TIMEOUT_MS 120000
#define CHILD_EXIT_TIMEOUT_MS 10000

/* One direction each: requests travel on in, replies on out. */
struct channel {
	int in;
	int out;
};

struct proc {
	char name[PROC_NAME_MAX + 1];
	pid_t pid;
	struct channel ch; /* init's view: writes requests to ch.out, reads ch.in */
};

static struct proc procs[MAX_PROCS];
static int nprocs;

static struct proc *find_proc(const char *name)
{
	int i;

	for (i = 0; i < nprocs; i++)
		if (strcmp(procs[i].name, name) == 0)
			return &procs[i];
	return NULL;
}

static void close_channel(struct channel *ch)
{
	close(ch->in);
	close(ch->out);
}

static void add_proc(const char *name, pid_t pid, struct channel ch)
{
	struct proc *p = &procs[nprocs++];

	snprintf(p->name, sizeof(p->name), "%s", name);
	p->pid = pid;
	p->ch = ch;
}

static void forget_proc(struct proc *p)
{
	close_channel(&p->ch);
	*p = procs[--nprocs];
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Wait for pid to end (SIGKILL after timeout_ms); its wait status. */
static int reap(pid_t pid, long timeout_ms)
{
	int status = 0;
	long waited = 0;
	pid_t r;

	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && waited < timeout_ms) {
		sleep_ms(1);
		waited++;
	}
	if (r == 0) {
		agent_log("pid %d did not end within %ld ms: killing it", (int)pid, timeout_ms);
		kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	return status;
}

static void put_wait_status(struct buf *b, pid_t pid, int status)
{
	put_u32(b, (uint32_t)pid);
	if (WIFSIGNALED(status)) {
		put_u8(b, EXIT_HOW_SIGNALED);
		put_u32(b, (uint32_t)WTERMSIG(status));
	} else {
		put_u8(b, EXIT_HOW_EXITED);
		put_u32(b, (uint32_t)WEXITSTATUS(status));
	}
}

static void describe_status(char *out, size_t len, int status)
{
	if (WIFSIGNALED(status))
		snprintf(out, len, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
}

/* A valid new name: printable, not empty, not taken, room left. */
static int check_new_name(struct reply *rep, const char *name)
{
	const char *c;

	if (!name[0] || strcmp(name, INIT_NAME) == 0 || find_proc(name)) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "fork: name '%s' is empty, reserved or taken", name);
		return -1;
	}
	for (c = name; *c; c++) {
		if (*c <= ' ' || *c > '~') {
			reply_fail(rep, ST_BAD_REQUEST, 0, "fork: name has a non-printable byte");
			return -1;
		}
	}
	if (nprocs == MAX_PROCS) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "fork: %d named processes already", MAX_PROCS);
		return -1;
	}
	return 0;
}

static void send_reply(int fd, const struct request *req, struct reply *rep)
{
	struct frame out;

	if (rep->payload.failed)
		reply_fail(rep, ST_ERRNO, ENOMEM, "reply too large or no memory");
	out = (struct frame){ .seq = req->seq, .op = req->op, .status = rep->status,
			      .error = rep->error, .payload = rep->payload };
	if (frame_write(fd, RESPONSE_MAGIC, &out) != 0)
		agent_log("cannot send reply to seq %u: %s", req->seq, strerror(errno));
}

static void send_bad_frame(int fd, uint32_t seq, const char *why)
{
	struct request req = { .seq = seq, .op = 0 };
	struct reply rep = { .status = ST_BAD_FRAME };

	buf_init(&rep.payload);
	agent_log("bad frame: %s", why);
	put_raw(&rep.payload, why, strlen(why));
	send_reply(fd, &req, &rep);
	buf_free(&rep.payload);
}

/* Payload = u16 target name, then the op's arguments. */
static int decode_request(const struct frame *f, struct request *req, struct reply *rep)
{
	req->seq = f->seq;
	req->op = f->op;
	req->args = (struct reader){ .p = f->payload.data, .left = f->payload.len };
	if (get_cstr(&req->args, req->target, sizeof(req->target), 1) != 0) {
		reply_fail(rep, ST_BAD_REQUEST, 0, "target name missing or longer than %u bytes",
			   PROC_NAME_MAX);
		return -1;
	}
	if (!req->target[0])
		strcpy(req->target, INIT_NAME);
	return 0;
}

static void serve_channel(struct channel ch) __attribute__((noreturn));
struct identity;
static void start_named(const struct identity *id, struct channel ch) __attribute__((noreturn));

/* Who a new named process is: its name and, unless UID_KEEP, its uid/gid. */
struct identity {
	char name[PROC_NAME_MAX + 1];
	uint32_t uid;
	uint32_t gid;
};

/*
 * Become the given uid/gid (real, effective, saved), without supplementary
 * groups.  Leaving uid 0 for good drops every capability
 * (cap_emulate_setxuid() in security/commoncap.c).  A new euid makes the
 * process non-dumpable (commit_creds() in kernel/cred.c), which hands its
 * /proc/<pid> files to root: make it dumpable again so it can read them.
 */
static int take_identity(const struct identity *id)
{
	if (id->uid == UID_KEEP && id->gid == UID_KEEP)
		return 0;
	/* Only root has groups to drop (and CAP_SETGID to drop them): a process
	 * that left uid 0 dropped them then.  The kernel judges the rest: an
	 * unprivileged process may only "change" to the ids it has. */
	if (geteuid() == 0 && syscall(SYS_setgroups, 0, NULL) != 0)
		return -1;
	if (id->gid != UID_KEEP && syscall(SYS_setresgid, id->gid, id->gid, id->gid) != 0)
		return -1;
	if (id->uid != UID_KEEP && syscall(SYS_setresuid, id->uid, id->uid, id->uid) != 0)
		return -1;
	return prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

/* A new named process: take the name and identity, tell init, serve. */
static void start_named(const struct identity *id, struct channel ch)
{
	struct frame ready = { .seq = 0, .op = OP_FORK, .status = ST_OK };
	char msg[160] = "";

	prctl(PR_SET_NAME, id->name, 0, 0, 0);
	if (take_identity(id) != 0) {
		snprintf(msg, sizeof(msg), "fork: '%s' cannot become uid %d gid %d: %s", id->name,
			 (int)id->uid, (int)id->gid, strerror(errno));
		ready.status = ST_ERRNO;
		ready.error = (uint32_t)errno;
	}
	buf_init(&ready.payload);
	put_raw(&ready.payload, msg, strlen(msg));
	frame_write(ch.out, RESPONSE_MAGIC, &ready);
	if (ready.status != ST_OK)
		_exit(1);
	serve_channel(ch);
}

/* Two pipes: parent_end is init's view, child_end the new process's. */
static int make_channel(struct channel *parent_end, struct channel *child_end)
{
	int requests[2], replies[2];

	if (pipe2(requests, O_CLOEXEC) != 0)
		return -1;
	if (pipe2(replies, O_CLOEXEC) != 0) {
		close(requests[0]);
		close(requests[1]);
		return -1;
	}
	*parent_end = (struct channel){ .in = replies[0], .out = requests[1] };
	*child_end = (struct channel){ .in = requests[0], .out = replies[1] };
	return 0;
}

/*
 * init's ends of the pipes of the child this process forked last, kept open
 * until init has taken its copies: init asks nothing else of us before it
 * has, so the next request closes them.  -1: none.
 */
static struct channel handover = { .in = -1, .out = -1 };

static void close_handover(void)
{
	if (handover.in >= 0)
		close_channel(&handover);
	handover = (struct channel){ .in = -1, .out = -1 };
}

/*
 * FORK in a named process.  Args: str name, u32 uid, u32 gid (the host's
 * request, forwarded by init as it is).  Reply: u32 pid of the new process,
 * u32 fd of its reply pipe's read end, u32 fd of its request pipe's write
 * end, both in this process, for init to take with pidfd_getfd().
 *
 * Why this way round.  The pipes used to be made by init, and the forking
 * process opened init's descriptors through /proc/<init>/fd/N.  That needs
 * search permission on init's fd directory (mode 0500, root's:
 * proc_fd_permission() in fs/proc/fd.c) and ptrace read access to init
 * (proc_fd_access_allowed() in fs/proc/base.c, __ptrace_may_access() in
 * kernel/ptrace.c), both of which a process that left uid 0 has lost with
 * CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE: it got EACCES, so an unprivileged
 * named process could not fork named children.  Now the forking process
 * makes the pipes, which needs no privilege, and init, which stays root
 * with every capability, copies its ends out of the forking process with
 * pidfd_getfd() (kernel/pid.c, PTRACE_MODE_ATTACH_REALCREDS: CAP_SYS_PTRACE
 * suffices whatever the target's uid or dumpable flag).  The one privileged
 * step is done by the one process that always holds the privilege, whatever
 * uid a scenario gives its processes.  pidfd_getfd() duplicates the open
 * pipe ends themselves (no reopen through fifo_open(), which would block or
 * fail with ENXIO when the other end has already gone).
 */
static void child_fork(struct request *req, struct reply *rep, struct channel own)
{
	struct identity id;
	struct channel init_end, child_end;
	long pid;

	get_cstr(&req->args, id.name, sizeof(id.name), 1);
	id.uid = get_u32(&req->args);
	id.gid = get_u32(&req->args);
	if (!args_ok(req, rep))
		return;
	if (make_channel(&init_end, &child_end) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "fork: pipe: %s", strerror(errno));
		return;
	}
	/* fork(), except that the new process is init's child, not ours. */
	pid = syscall(SYS_clone, (unsigned long)(CLONE_PARENT | SIGCHLD), 0, 0, 0, 0);
	if (pid == 0) {
		close_channel(&own);
		close_channel(&init_end);
		start_named(&id, child_end);
	}
	if (pid < 0) {
		reply_fail(rep, ST_ERRNO, errno, "fork: clone: %s", strerror(errno));
		close_channel(&child_end);
		close_channel(&init_end);
		return;
	}
	close_channel(&child_end);
	handover = init_end;
	put_u32(&rep->payload, (uint32_t)pid);
	put_u32(&rep->payload, (uint32_t)init_end.in);
	put_u32(&rep->payload, (uint32_t)init_end.out);
}

/* The loop of a named process: requests from init, replies to init. */
static void serve_channel(struct channel ch)
{
	for (;;) {
		struct frame in;
		struct request req = { .op = 0 };
		struct reply rep = { .status = ST_OK };
		char why[200];
		int r = frame_read(ch.in, REQUEST_MAGIC, &in, why, sizeof(why));

		if (r == FRAME_EOF)
			_exit(0);
		if (r == FRAME_BAD) {
			send_bad_frame(ch.out, in.seq, why);
			continue;
		}
		close_handover(); /* init has its copies by now */
		buf_init(&rep.payload);
		if (decode_request(&in, &req, &rep) == 0 &&
		    (!drain_before_ops || settle(SETTLE_DRAIN_LRU, &rep, "drain before op") == 0)) {
			if (req.op == OP_FORK) {
				child_fork(&req, &rep, ch);
			} else if (req.op == OP_EXIT) {
				uint32_t code = get_u32(&req.args);

				if (args_ok(&req, &rep)) {
					send_reply(ch.out, &req, &rep);
					_exit((int)(code & 0xff));
				}
			} else if (!handle_common_op(&req, &rep)) {
				reply_fail(&rep, ST_UNKNOWN_OP, 0,
					   "op %u is not served by a named process", req.op);
			}
		}
		send_reply(ch.out, &req, &rep);
		buf_free(&rep.payload);
		buf_free(&in.payload);
	}
}

/*
 * After a fork: the new process's first word on its reply pipe says whether
 * it took its identity.  0 if so; otherwise it is reaped and rep says why.
 */
static int await_ready(const struct channel *mine, pid_t pid, const char *name,
		       struct reply *rep)
{
	struct pollfd pfd = { .fd = mine->in, .events = POLLIN };
	struct frame ready;
	char why[200] = "it closed its pipe", how[64];
	int n, r = FRAME_EOF;

	do
		n = poll(&pfd, 1, CHILD_REPLY_TIMEOUT_MS);
	while (n < 0 && errno == EINTR);
	if (n > 0)
		r = frame_read(mine->in, RESPONSE_MAGIC, &ready, why, sizeof(why));
	if (r == FRAME_OK && ready.status == ST_OK) {
		buf_free(&ready.payload);
		return 0;
	}
	if (r == FRAME_OK) {
		reply_fail(rep, ready.status, (int)ready.error, "%.*s", (int)ready.payload.len,
			   (const char *)ready.payload.data);
		buf_free(&ready.payload);
		reap(pid, CHILD_EXIT_TIMEOUT_MS);
		return -1;
	}
	kill(pid, SIGKILL);
	describe_status(how, sizeof(how), reap(pid, CHILD_EXIT_TIMEOUT_MS));
	reply_fail(rep, ST_NO_PROCESS, 0, "fork: '%s' (pid %d) did not start: %s, %s", name,
		   (int)pid, why, how);
	return -1;
}

/*
 * Take a freshly forked named process into the table once it says it is
 * ready, and answer with its pid; a child that never gets ready is dropped.
 */
static void adopt_child(struct channel *mine, pid_t pid, const char *name, struct reply *rep)
{
	if (await_ready(mine, pid, name, rep) != 0) {
		close_channel(mine);
		return;
	}
	add_proc(name, pid, *mine);
	put_u32(&rep->payload, (uint32_t)pid);
}

/* FORK of init itself: a plain fork().  Args: str name, u32 uid, u32 gid. */
static void init_fork(int port, struct request *req, struct reply *rep)
{
	struct identity id;
	struct channel mine, theirs;
	pid_t pid;
	int i;

	get_cstr(&req->args, id.name, sizeof(id.name), 1);
	id.uid = get_u32(&req->args);
	id.gid = get_u32(&req->args);
	if (!args_ok(req, rep) || check_new_name(rep, id.name) != 0)
		return;
	if (make_channel(&mine, &theirs) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "fork: pipe: %s", strerror(errno));
		return;
	}
	pid = fork();
	if (pid == 0) {
		close(port);
		for (i = 0; i < nprocs; i++)
			close_channel(&procs[i].ch);
		close_channel(&mine);
		start_named(&id, theirs);
	}
	close_channel(&theirs);
	if (pid < 0) {
		reply_fail(rep, ST_ERRNO, errno, "fork: %s", strerror(errno));
		close_channel(&mine);
		return;
	}
	adopt_child(&mine, pid, id.name, rep);
}

/*
 * Send a request frame to a named process and read its reply.  If the
 * process dies or stays silent, it is reaped (killed first if silent) and
 * forgotten, and rep says what happened; returns -1 then.
 */
static int ask_child(struct proc *p, const struct frame *request, struct frame *out,
		     struct reply *rep)
{
	struct pollfd pfd = { .fd = p->ch.in, .events = POLLIN };
	char why[200] = "", how[64];
	int r = FRAME_EOF, n, status;

	if (frame_write(p->ch.out, REQUEST_MAGIC, request) == 0) {
		do
			n = poll(&pfd, 1, CHILD_REPLY_TIMEOUT_MS);
		while (n < 0 && errno == EINTR);
		if (n > 0)
			r = frame_read(p->ch.in, RESPONSE_MAGIC, out, why, sizeof(why));
		else
			snprintf(why, sizeof(why), "no reply within %d ms", CHILD_REPLY_TIMEOUT_MS);
	}
	if (r == FRAME_OK)
		return 0;
	if (why[0])
		kill(p->pid, SIGKILL); /* alive but not making sense: end it */
	status = reap(p->pid, CHILD_EXIT_TIMEOUT_MS);
	describe_status(how, sizeof(how), status);
	reply_fail(rep, ST_NO_PROCESS, 0, "process '%s' (pid %d) %s%s%s", p->name,
		   (int)p->pid, how, why[0] ? ": " : "", why);
	forget_proc(p);
	return -1;
}

/* The child's reply becomes ours, as it is. */
static void relay(struct frame *out, struct reply *rep)
{
	rep->status = out->status;
	rep->error = out->error;
	put_raw(&rep->payload, out->payload.data, out->payload.len);
	buf_free(&out->payload);
}

/* A copy of descriptor fd of the process behind pidfd; -1 and errno if none. */
static int take_fd(int pidfd, uint32_t fd)
{
	return (int)syscall(SYS_pidfd_getfd, pidfd, (int)fd, 0);
}

/*
 * FORK in a named process: it makes the pipes and forks (child_fork());
 * init takes its ends of the pipes from it and waits until the new process
 * is ready.  The request goes to the process as it came.
 */
static void fork_in_child(struct proc *p, const struct frame *in, struct request *req,
			  struct reply *rep)
{
	struct identity id;
	struct channel mine = { .in = -1, .out = -1 };
	struct frame out;
	struct reader r;
	uint32_t in_fd, out_fd;
	pid_t pid;
	int pidfd;

	get_cstr(&req->args, id.name, sizeof(id.name), 1);
	id.uid = get_u32(&req->args);
	id.gid = get_u32(&req->args);
	if (!args_ok(req, rep) || check_new_name(rep, id.name) != 0 ||
	    ask_child(p, in, &out, rep) != 0)
		return;
	if (out.status != ST_OK) {
		relay(&out, rep);
		return;
	}
	r = (struct reader){ .p = out.payload.data, .left = out.payload.len };
	pid = (pid_t)get_u32(&r);
	in_fd = get_u32(&r);
	out_fd = get_u32(&r);
	buf_free(&out.payload);
	if (!reader_finished(&r) || pid <= 0) {
		/* Not ours to kill: no pid we can trust. */
		reply_fail(rep, ST_BAD_REQUEST, 0, "fork: '%s' answered no pid and pipe ends",
			   p->name);
		return;
	}
	/* The forking process holds these ends until its next request. */
	pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
	if (pidfd >= 0) {
		mine.in = take_fd(pidfd, in_fd);
		mine.out = mine.in < 0 ? -1 : take_fd(pidfd, out_fd);
	}
	if (mine.out < 0) {
		int err = errno;
		char how[64];

		if (pidfd >= 0)
			close(pidfd);
		if (mine.in >= 0)
			close(mine.in);
		kill(pid, SIGKILL);
		describe_status(how, sizeof(how), reap(pid, CHILD_EXIT_TIMEOUT_MS));
		reply_fail(rep, ST_ERRNO, err, "fork: taking the pipes of '%s' (pid %d) from '%s': "
			   "%s; the new process %s", id.name, (int)pid, p->name, strerror(err), how);
		return;
	}
	close(pidfd);
	adopt_child(&mine, pid, id.name, rep);
}

/* EXIT: the process acknowledges and exits; init reaps it and reports. */
static void exit_child(struct proc *p, const struct frame *in, struct request *req,
		       struct reply *rep)
{
	struct frame out;
	pid_t pid = p->pid;
	int status;

	get_u32(&req->args);
	if (!args_ok(req, rep) || ask_child(p, in, &out, rep) != 0)
		return;
	if (out.status != ST_OK) {
		relay(&out, rep);
		return;
	}
	buf_free(&out.payload);
	status = reap(pid, CHILD_EXIT_TIMEOUT_MS);
	forget_proc(p);
	put_wait_status(&rep->payload, pid, status);
}

/* KILL: args u32 signal; init signals the process, reaps it and reports. */
static void kill_child(struct proc *p, struct request *req, struct reply *rep)
{
	uint32_t sig = get_u32(&req->args);
	pid_t pid = p->pid;
	int status;

	if (!args_ok(req, rep))
		return;
	if (kill(pid, (int)sig) != 0) {
		reply_fail(rep, ST_ERRNO, errno, "kill %d: %s", (int)pid, strerror(errno));
		return;
	}
	status = reap(pid, CHILD_EXIT_TIMEOUT_MS);
	forget_proc(p);
	put_wait_status(&rep->payload, pid, status);
}

static void kill_all_children(void)
{
	while (nprocs > 0) {
		kill(procs[0].pid, SIGKILL);
		reap(procs[0].pid, CHILD_EXIT_TIMEOUT_MS);
		forget_proc(&procs[0]);
	}
}

/* Requests whose target is a named process. */
static void handle_for_child(struct proc *p, const struct frame *in, struct request *req,
			     struct reply *rep)
{
	struct frame out;

	switch (req->op) {
	case OP_FORK: fork_in_child(p, in, req, rep); break;
	case OP_EXIT: exit_child(p, in, req, rep); break;
	case OP_KILL: kill_child(p, req, rep); break;
	case OP_POWEROFF:
	case OP_LIST:
		reply_fail(rep, ST_BAD_REQUEST, 0, "op %u is for '%s' only", req->op, INIT_NAME);
		break;
	default:
		if (ask_child(p, in, &out, rep) == 0)
			relay(&out, rep);
	}
}

/* LIST: () -> u32 n, n x (str name, u32 pid): the named processes. */
static void list_procs(struct request *req, struct reply *rep)
{
	int i;

	if (!args_ok(req, rep))
		return;
	put_u32(&rep->payload, (uint32_t)nprocs);
	for (i = 0; i < nprocs; i++) {
		put_str(&rep->payload, procs[i].name);
		put_u32(&rep->payload, (uint32_t)procs[i].pid);
	}
}

/* Requests whose target is init itself. */
static void handle_for_init(int port, struct request *req, struct reply *rep)
{
	switch (req->op) {
	case OP_FORK: init_fork(port, req, rep); break;
	case OP_LIST: list_procs(req, rep); break;
	case OP_EXIT:
	case OP_KILL:
		reply_fail(rep, ST_BAD_REQUEST, 0, "'%s' does not exit: use poweroff", INIT_NAME);
		break;
	case OP_POWEROFF:
		if (!args_ok(req, rep))
			break;
		kill_all_children();
		sync();
		send_reply(port, req, rep);
		power_off();
	default:
		if (!handle_common_op(req, rep))
			reply_fail(rep, ST_UNKNOWN_OP, 0, "unknown op %u", req->op);
	}
}

static void handle_host_frame(int port, struct frame *in)
{
	struct request req = { .seq = in->seq, .op = in->op };
	struct reply rep = { .status = ST_OK };
	struct proc *p;

	buf_init(&rep.payload);
	if (decode_request(in, &req, &rep) == 0) {
		if (strcmp(req.target, INIT_NAME) == 0)
			handle_for_init(port, &req, &rep);
		else if ((p = find_proc(req.target)) != NULL)
			handle_for_child(p, in, &req, &rep);
		else
			reply_fail(&rep, ST_NO_PROCESS, 0, "no process named '%s'", req.target);
	}
	send_reply(port, &req, &rep);
	buf_free(&rep.payload);
}

/* init's loop.  Returns when the host hangs up. */
void serve_port(int port)
{
	for (;;) {
		struct frame in;
		char why[200];
		int r = frame_read(port, REQUEST_MAGIC, &in, why, sizeof(why));

		if (r == FRAME_EOF) {
			agent_log("host closed the channel");
			return;
		}
		if (r == FRAME_BAD) {
			/* Drop the rest of whatever it was first: the host sends
			 * nothing new until it has our answer. */
			frame_discard_input(port);
			send_bad_frame(port, in.seq, why);
			continue;
		}
		handle_host_frame(port, &in);
		buf_free(&in.payload);
	}
}
