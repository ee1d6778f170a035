/* node/main.c - triekv-server's entry point. */
#include "node/node.h"

int main(int argc, char **argv)
{
    return node_main(argc, argv);
}
