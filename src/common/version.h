#ifndef DS_COMMON_VERSION_H
#define DS_COMMON_VERSION_H
#define DS_VERSION "0.1.0"
#endif
