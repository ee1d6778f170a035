/* proxy/main.c - triekv-proxy's entry point. */
#include "proxy/proxy.h"

int main(int argc, char **argv)
{
    return proxy_main(argc, argv);
}
