/* SPDX-License-Identifier: MIT */
/* faultline: user-space paging for Linux, on userfaultfd. The umbrella header. */
#ifndef FAULTLINE_H
#define FAULTLINE_H

#include <faultline/uffd.h>
#include <faultline/store.h>
#include <faultline/pager.h>
#include <faultline/monitor.h>
#include <faultline/migrate.h>
#include <faultline/snapshot.h>

#endif /* FAULTLINE_H */
