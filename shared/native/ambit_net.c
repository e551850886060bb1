/*
 * ambit_net: the few Linux socket calls Node cannot make itself
 * (setns-scoped socket creation, SO_MARK, IP_TRANSPARENT, SO_REUSEPORT,
 * SO_ORIGINAL_DST, SCM_RIGHTS fd passing). Everything else lives in TypeScript;
 * see shared/native/index.ts for the typed wrapper and DESIGN.md section 5.
 *
 * Every syscall failure throws a JS Error "<call>: <strerror>" with .code set
 * to the errno name, so callers can branch on e.g. 'EAGAIN' or 'EPERM'.
 */
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Defined here rather than via <linux/netfilter_ipv4.h> and
 * <linux/netfilter_ipv6/ip6_tables.h>, whose includes clash with <netinet/in.h>. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif

#define MAX_RECV_FDS 8

/* ---------- errors ---------- */

static const char *errno_name(int e) {
  switch (e) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(EBADF)
    E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(ENODEV) E(ENOTDIR)
    E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOSPC) E(EPIPE) E(ERANGE)
    E(EAGAIN) E(EINPROGRESS) E(EALREADY) E(ENOTSOCK) E(EDESTADDRREQ)
    E(EMSGSIZE) E(EPROTOTYPE) E(ENOPROTOOPT) E(EPROTONOSUPPORT)
    E(EOPNOTSUPP) E(EAFNOSUPPORT) E(EADDRINUSE) E(EADDRNOTAVAIL)
    E(ENETDOWN) E(ENETUNREACH) E(ECONNABORTED) E(ECONNRESET) E(ENOBUFS)
    E(EISCONN) E(ENOTCONN) E(ETIMEDOUT) E(ECONNREFUSED) E(EHOSTUNREACH)
    E(ENOSYS) E(ELOOP) E(ENAMETOOLONG)
#undef E
    default: return "UNKNOWN";
  }
}

/* Throws Error("<call>: <message>") with .code = code. Always returns NULL so
 * callers can `return throw_code(...)`. */
static napi_value throw_code(napi_env env, const char *code, const char *call, const char *msg) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s: %s", call, msg);
  napi_value jcode, jmsg, err;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode);
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &jmsg);
  napi_create_error(env, jcode, jmsg, &err);
  napi_throw(env, err);
  return NULL;
}

static napi_value throw_errno(napi_env env, const char *call, int e) {
  return throw_code(env, errno_name(e), call, strerror(e));
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

/* ---------- argument helpers ---------- */

/* Reads an integral JS number in [min, max]; throws TypeError/RangeError otherwise. */
static int get_int(napi_env env, napi_value v, const char *what, int64_t min, int64_t max, int64_t *out) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_number) {
    char m[160];
    snprintf(m, sizeof m, "%s must be a number", what);
    throw_type(env, m);
    return 0;
  }
  double d;
  napi_get_value_double(env, v, &d);
  /* Range first: casting NaN/huge doubles to int64_t is undefined behaviour. */
  if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d) {
    char m[160];
    snprintf(m, sizeof m, "%s must be an integer in [%lld, %lld], got %g", what, (long long)min, (long long)max, d);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", m);
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

static int get_fd(napi_env env, napi_value v, const char *what, int *out) {
  int64_t x;
  if (!get_int(env, v, what, 0, INT32_MAX, &x)) return 0;
  *out = (int)x;
  return 1;
}

/* Fetches opts[name]; *present = 0 when missing or undefined. */
static int get_opt(napi_env env, napi_value obj, const char *name, napi_value *out, int *present) {
  bool has = false;
  *present = 0;
  if (napi_has_named_property(env, obj, name, &has) != napi_ok) return 0;
  if (!has) return 1;
  if (napi_get_named_property(env, obj, name, out) != napi_ok) return 0;
  napi_valuetype t;
  napi_typeof(env, *out, &t);
  *present = (t != napi_undefined);
  return 1;
}

static int get_bool_opt(napi_env env, napi_value obj, const char *name, int *out) {
  napi_value v;
  int present;
  *out = 0;
  if (!get_opt(env, obj, name, &v, &present)) return 0;
  if (!present) return 1;
  bool b;
  if (napi_get_value_bool(env, v, &b) != napi_ok) {
    char m[160];
    snprintf(m, sizeof m, "tcpSocket: option %s must be a boolean", name);
    throw_type(env, m);
    return 0;
  }
  *out = b;
  return 1;
}

static napi_value make_int(napi_env env, int64_t x) {
  napi_value v;
  napi_create_int64(env, x, &v);
  return v;
}

static napi_value undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

/* ---------- network namespaces ---------- */

/* The current *thread's* netns: setns only moves the calling thread, and Node
 * may run libuv threads in other namespaces, so /proc/self would be wrong. */
static int open_current_netns(void) {
  return open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
}

/* Returning to the original namespace must not fail silently: a main thread left
 * in a pod's netns would create every later socket there, bypassing the mesh. */
static void restore_netns(int orig) {
  if (setns(orig, CLONE_NEWNET) < 0) {
    fprintf(stderr, "ambit_net: FATAL: setns back to original netns failed: %s\n", strerror(errno));
    abort();
  }
}

/* openNetns(path) -> fd */
static napi_value js_open_netns(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char path[4096];
  size_t len;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok)
    return throw_type(env, "openNetns: path must be a string");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    char call[4200];
    snprintf(call, sizeof call, "open %s", path);
    return throw_errno(env, call, errno);
  }
  return make_int(env, fd);
}

/* closeFd(fd) */
static napi_value js_close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int fd;
  if (argc < 1 || !get_fd(env, argv[0], "closeFd: fd", &fd)) return NULL;
  /* EINTR on close still releases the fd on Linux; retrying would be wrong. */
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, "close", errno);
  return undefined(env);
}

/* inNetns(netnsFd, fn) -> fn() run with this thread inside netnsFd */
static napi_value js_in_netns(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int nsfd;
  if (argc < 2 || !get_fd(env, argv[0], "inNetns: netnsFd", &nsfd)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) return throw_type(env, "inNetns: fn must be a function");

  int orig = open_current_netns();
  if (orig < 0) return throw_errno(env, "open /proc/thread-self/ns/net", errno);
  if (setns(nsfd, CLONE_NEWNET) < 0) {
    int e = errno;
    close(orig);
    return throw_errno(env, "setns", e);
  }
  napi_value recv = undefined(env), result = NULL;
  napi_status st = napi_call_function(env, recv, argv[1], 0, NULL, &result);
  restore_netns(orig);
  close(orig);
  /* On a JS exception the error stays pending and propagates to the caller. */
  return st == napi_ok ? result : NULL;
}

/* ---------- addresses ---------- */

/* Parses ip (IPv4, or IPv6 with optional %zone) and port into ss. */
static int parse_addr(napi_env env, int family, const char *ip, int port,
                      struct sockaddr_storage *ss, socklen_t *sl) {
  memset(ss, 0, sizeof *ss);
  if (family == 4) {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &a->sin_addr) != 1) {
      char m[300];
      snprintf(m, sizeof m, "invalid IPv4 address '%s'", ip);
      throw_code(env, "EINVAL", "tcpSocket", m);
      return 0;
    }
    *sl = sizeof *a;
    return 1;
  }
  struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
  a->sin6_family = AF_INET6;
  a->sin6_port = htons((uint16_t)port);
  char host[256];
  snprintf(host, sizeof host, "%s", ip);
  char *zone = strchr(host, '%');
  if (zone) *zone++ = '\0';
  if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1 || (zone && !(a->sin6_scope_id = if_nametoindex(zone)))) {
    char m[300];
    snprintf(m, sizeof m, "invalid IPv6 address '%s'", ip);
    throw_code(env, "EINVAL", "tcpSocket", m);
    return 0;
  }
  *sl = sizeof *a;
  return 1;
}

/* {ip, port} from a sockaddr; IPv4-mapped IPv6 addresses are reported as IPv4. */
static napi_value addr_object(napi_env env, const struct sockaddr_storage *ss) {
  char ip[INET6_ADDRSTRLEN];
  int port;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    port = ntohs(a->sin_port);
  } else {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
      inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], ip, sizeof ip);
    else
      inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    port = ntohs(a->sin6_port);
  }
  napi_value obj, jip;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, ip, NAPI_AUTO_LENGTH, &jip);
  napi_set_named_property(env, obj, "ip", jip);
  napi_set_named_property(env, obj, "port", make_int(env, port));
  return obj;
}

/* ---------- sockets ---------- */

static int setint(int fd, int level, int opt, int val) {
  return setsockopt(fd, level, opt, &val, sizeof val);
}

/* tcpSocket(opts) -> fd. Closes the fd on any failure so nothing leaks. */
static napi_value js_tcp_socket(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_value opts;
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (t == napi_undefined) napi_create_object(env, &opts);
  else if (t == napi_object) opts = argv[0];
  else return throw_type(env, "tcpSocket: opts must be an object");

  napi_value v;
  int present;
  int64_t x;

  int nsfd = -1;
  if (!get_opt(env, opts, "netnsFd", &v, &present)) return NULL;
  if (present) {
    if (!get_fd(env, v, "tcpSocket: netnsFd", &nsfd)) return NULL;
  }

  int family = 4;
  if (!get_opt(env, opts, "family", &v, &present)) return NULL;
  if (present) {
    if (!get_int(env, v, "tcpSocket: family", 4, 6, &x)) return NULL;
    if (x != 4 && x != 6) return throw_type(env, "tcpSocket: family must be 4 or 6");
    family = (int)x;
  }

  int has_mark = 0;
  uint32_t mark = 0;
  if (!get_opt(env, opts, "mark", &v, &has_mark)) return NULL;
  if (has_mark) {
    if (!get_int(env, v, "tcpSocket: mark", 0, UINT32_MAX, &x)) return NULL;
    mark = (uint32_t)x;
  }

  int transparent, reuse_addr, reuse_port;
  if (!get_bool_opt(env, opts, "transparent", &transparent)) return NULL;
  if (!get_bool_opt(env, opts, "reuseAddr", &reuse_addr)) return NULL;
  if (!get_bool_opt(env, opts, "reusePort", &reuse_port)) return NULL;

  /* Parse bind before creating the socket so bad input never costs a syscall. */
  int has_bind = 0;
  struct sockaddr_storage bind_ss;
  socklen_t bind_sl = 0;
  if (!get_opt(env, opts, "bind", &v, &has_bind)) return NULL;
  if (has_bind) {
    napi_value jip, jport;
    int p1, p2;
    napi_typeof(env, v, &t);
    if (t != napi_object) return throw_type(env, "tcpSocket: bind must be { ip, port }");
    if (!get_opt(env, v, "ip", &jip, &p1) || !get_opt(env, v, "port", &jport, &p2)) return NULL;
    if (!p1 || !p2) return throw_type(env, "tcpSocket: bind must be { ip, port }");
    char ip[256];
    size_t len;
    if (napi_get_value_string_utf8(env, jip, ip, sizeof ip, &len) != napi_ok)
      return throw_type(env, "tcpSocket: bind.ip must be a string");
    if (!get_int(env, jport, "tcpSocket: bind.port", 0, 65535, &x)) return NULL;
    if (!parse_addr(env, family, ip, (int)x, &bind_ss, &bind_sl)) return NULL;
  }

  int has_listen = 0;
  int backlog = 0;
  if (!get_opt(env, opts, "listen", &v, &has_listen)) return NULL;
  if (has_listen) {
    if (!get_int(env, v, "tcpSocket: listen", 0, INT32_MAX, &x)) return NULL;
    backlog = (int)x;
  }

  int domain = family == 6 ? AF_INET6 : AF_INET;
  int type = SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC;
  int fd;
  if (nsfd >= 0) {
    /* A socket belongs to the netns it was created in for life, so only
     * socket() itself needs to run inside the target namespace. */
    int orig = open_current_netns();
    if (orig < 0) return throw_errno(env, "open /proc/thread-self/ns/net", errno);
    if (setns(nsfd, CLONE_NEWNET) < 0) {
      int e = errno;
      close(orig);
      return throw_errno(env, "setns", e);
    }
    fd = socket(domain, type, 0);
    int e = errno;
    restore_netns(orig);
    close(orig);
    if (fd < 0) return throw_errno(env, "socket", e);
  } else {
    fd = socket(domain, type, 0);
    if (fd < 0) return throw_errno(env, "socket", errno);
  }

  const char *failed = NULL;
  if (has_mark && setint(fd, SOL_SOCKET, SO_MARK, (int)mark) < 0) failed = "setsockopt(SO_MARK)";
  else if (transparent && family == 4 && setint(fd, SOL_IP, IP_TRANSPARENT, 1) < 0) failed = "setsockopt(IP_TRANSPARENT)";
  else if (transparent && family == 6 && setint(fd, SOL_IPV6, IPV6_TRANSPARENT, 1) < 0) failed = "setsockopt(IPV6_TRANSPARENT)";
  else if (reuse_addr && setint(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0) failed = "setsockopt(SO_REUSEADDR)";
  else if (reuse_port && setint(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0) failed = "setsockopt(SO_REUSEPORT)";
  else if (has_bind && bind(fd, (struct sockaddr *)&bind_ss, bind_sl) < 0) failed = "bind";
  else if (has_listen && listen(fd, backlog) < 0) failed = "listen";
  if (failed) {
    int e = errno;
    close(fd);
    return throw_errno(env, failed, e);
  }
  return make_int(env, fd);
}

/* originalDst(fd) -> { ip, port } before iptables REDIRECT/DNAT */
static napi_value js_original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int fd;
  if (argc < 1 || !get_fd(env, argv[0], "originalDst: fd", &fd)) return NULL;

  /* The socket's own family decides which conntrack table to ask; an IPv6
   * socket carrying an IPv4-mapped connection is tracked as IPv4. */
  struct sockaddr_storage local;
  socklen_t ll = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &ll) < 0) return throw_errno(env, "getsockname", errno);
  int v4 = local.ss_family == AF_INET ||
           (local.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr));

  struct sockaddr_storage dst;
  memset(&dst, 0, sizeof dst);
  socklen_t dl;
  if (v4) {
    dl = sizeof(struct sockaddr_in);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &dl) < 0)
      return throw_errno(env, "getsockopt(SO_ORIGINAL_DST)", errno);
  } else if (local.ss_family == AF_INET6) {
    dl = sizeof(struct sockaddr_in6);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &dl) < 0)
      return throw_errno(env, "getsockopt(IP6T_SO_ORIGINAL_DST)", errno);
  } else {
    return throw_code(env, "EAFNOSUPPORT", "originalDst", "fd is not an IPv4/IPv6 socket");
  }
  return addr_object(env, &dst);
}

/* setMark(fd, mark) */
static napi_value js_set_mark(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int fd;
  int64_t mark;
  if (argc < 2) return throw_type(env, "setMark(fd, mark)");
  if (!get_fd(env, argv[0], "setMark: fd", &fd)) return NULL;
  if (!get_int(env, argv[1], "setMark: mark", 0, UINT32_MAX, &mark)) return NULL;
  if (setint(fd, SOL_SOCKET, SO_MARK, (int)(uint32_t)mark) < 0) return throw_errno(env, "setsockopt(SO_MARK)", errno);
  return undefined(env);
}

/* getMark(fd) -> SO_MARK */
static napi_value js_get_mark(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int fd;
  if (argc < 1 || !get_fd(env, argv[0], "getMark: fd", &fd)) return NULL;
  uint32_t mark = 0;
  socklen_t ml = sizeof mark;
  if (getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &ml) < 0) return throw_errno(env, "getsockopt(SO_MARK)", errno);
  return make_int(env, mark);
}

/* ---------- unix sockets / fd passing ---------- */

/* socketPair(seqpacket?) -> [fd, fd], non-blocking and close-on-exec */
static napi_value js_socket_pair(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool seq = false;
  if (argc >= 1) {
    napi_valuetype t;
    napi_typeof(env, argv[0], &t);
    if (t != napi_undefined && napi_get_value_bool(env, argv[0], &seq) != napi_ok)
      return throw_type(env, "socketPair: seqpacket must be a boolean");
  }
  int sv[2];
  int type = (seq ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  if (socketpair(AF_UNIX, type, 0, sv) < 0) return throw_errno(env, "socketpair", errno);
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, make_int(env, sv[0]));
  napi_set_element(env, arr, 1, make_int(env, sv[1]));
  return arr;
}

/* sendFd(unixFd, data, fd): one sendmsg carrying data plus fd as SCM_RIGHTS */
static napi_value js_send_fd(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) return throw_type(env, "sendFd(unixFd, data, fd)");
  int ufd, fd;
  if (!get_fd(env, argv[0], "sendFd: unixFd", &ufd)) return NULL;
  bool isbuf = false;
  napi_is_buffer(env, argv[1], &isbuf);
  if (!isbuf) return throw_type(env, "sendFd: data must be a Buffer");
  if (!get_fd(env, argv[2], "sendFd: fd", &fd)) return NULL;
  void *data;
  size_t len;
  napi_get_buffer_info(env, argv[1], &data, &len);
  /* Ancillary data rides on real bytes; with none, stream sockets drop it. */
  if (len == 0) return throw_code(env, "EINVAL", "sendFd", "data must be at least 1 byte");

  struct iovec iov = {.iov_base = data, .iov_len = len};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof u.buf;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));

  ssize_t n;
  do n = sendmsg(ufd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, "sendmsg", errno);
  if ((size_t)n != len) {
    /* The fd went out with the first n bytes; the caller must not resend it. */
    char m[160];
    snprintf(m, sizeof m, "short write (%zd of %zu bytes sent; the fd went with them)", n, len);
    return throw_code(env, "ESHORTWRITE", "sendmsg", m);
  }
  return undefined(env);
}

/* recvFd(unixFd, maxBytes) -> { data, fd|null } or null on EAGAIN */
static napi_value js_recv_fd(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return throw_type(env, "recvFd(unixFd, maxBytes)");
  int ufd;
  int64_t max;
  if (!get_fd(env, argv[0], "recvFd: unixFd", &ufd)) return NULL;
  if (!get_int(env, argv[1], "recvFd: maxBytes", 1, 16 * 1024 * 1024, &max)) return NULL;

  char *buf = malloc((size_t)max);
  if (!buf) return throw_errno(env, "malloc", ENOMEM);
  struct iovec iov = {.iov_base = buf, .iov_len = (size_t)max};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * MAX_RECV_FDS)];
  } u;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof u.buf;

  ssize_t n;
  do n = recvmsg(ufd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    int e = errno;
    free(buf);
    if (e == EAGAIN || e == EWOULDBLOCK) {
      napi_value nul;
      napi_get_null(env, &nul);
      return nul;
    }
    return throw_errno(env, "recvmsg", e);
  }

  /* Keep the first passed fd; close any extras so they cannot leak. */
  int got = -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < cnt; i++) {
      int f;
      memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
      if (got < 0) got = f;
      else close(f);
    }
  }

  napi_value obj, jdata, jfd;
  if (napi_create_buffer_copy(env, (size_t)n, buf, NULL, &jdata) != napi_ok) {
    free(buf);
    if (got >= 0) close(got);
    return NULL;
  }
  free(buf);
  if (got >= 0) jfd = make_int(env, got);
  else napi_get_null(env, &jfd);
  napi_create_object(env, &obj);
  napi_set_named_property(env, obj, "data", jdata);
  napi_set_named_property(env, obj, "fd", jfd);
  return obj;
}

/* ---------- module ---------- */

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    {"openNetns", NULL, js_open_netns, NULL, NULL, NULL, napi_enumerable, NULL},
    {"closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
    {"inNetns", NULL, js_in_netns, NULL, NULL, NULL, napi_enumerable, NULL},
    {"tcpSocket", NULL, js_tcp_socket, NULL, NULL, NULL, napi_enumerable, NULL},
    {"originalDst", NULL, js_original_dst, NULL, NULL, NULL, napi_enumerable, NULL},
    {"setMark", NULL, js_set_mark, NULL, NULL, NULL, napi_enumerable, NULL},
    {"getMark", NULL, js_get_mark, NULL, NULL, NULL, napi_enumerable, NULL},
    {"socketPair", NULL, js_socket_pair, NULL, NULL, NULL, napi_enumerable, NULL},
    {"sendFd", NULL, js_send_fd, NULL, NULL, NULL, napi_enumerable, NULL},
    {"recvFd", NULL, js_recv_fd, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
