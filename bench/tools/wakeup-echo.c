/*
 * The least a proxy can do when traffic wakes it: a TCP echo server in C (one epoll loop, one
 * connection at a time, TCP_NODELAY), for bench/wakeup.ts. It prints its port, then answers every
 * read with the same bytes until the client closes; it exits after that connection.
 *
 *   cc -O2 -o wakeup-echo wakeup-echo.c && ./wakeup-echo
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(void) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(ls, 1) < 0) die("listen");
  socklen_t len = sizeof a;
  if (getsockname(ls, (struct sockaddr *)&a, &len) < 0) die("getsockname");
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  int c = accept(ls, NULL, NULL);
  if (c < 0) die("accept");
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0) die("epoll_ctl");
  char buf[65536];
  for (;;) {
    struct epoll_event got;
    int n = epoll_wait(ep, &got, 1, -1);
    if (n < 0) die("epoll_wait");
    ssize_t r = read(c, buf, sizeof buf);
    if (r <= 0) break;
    for (ssize_t off = 0; off < r;) {
      ssize_t w = write(c, buf + off, (size_t)(r - off));
      if (w < 0) die("write");
      off += w;
    }
  }
  return 0;
}
